// Crash points for tests: with VIRT_RECONCILE_FAILPOINT=NAME the process kills itself
// (SIGKILL, as a power cut or kill -9 would) when it reaches the point of that name, so a
// test can stop an apply between two exact steps instead of racing a timer. Points:
// image-before-publish, image-after-publish, image-extents-published, volume-created,
// volume-made (a blank file volume made, its path not yet recorded), volume-group-step (a
// volume of a group of blank ones made and recorded, the next one's create under way), pool-defined,
// domain-defined (each right after the step, before its record), rekey-started (a re-key
// recorded, no keyslot changed yet), rekey-added (the new keyslot added and checked, the old
// ones not erased), rekey-keyed (the old keyslots erased, the secret not yet set), backup-copied
// (an incremental backup's copy made, a shut-off domain still started paused, nothing recorded),
// restore-written (a backup written into an image, not yet compared; the image's copy aside).
export function failpoint(name: string): void {
  if (process.env.VIRT_RECONCILE_FAILPOINT === name) process.kill(process.pid, 'SIGKILL');
}
