// `reconcile completion bash|zsh`: a shell completion script for the commands and options the
// command line defines (cli.ts describes them as a CommandSpec tree), so the two cannot drift.

export interface ValueSpec {
  /** the placeholder shown in help: PATH, DIR, FORMAT… */
  label: string;
  /** what to offer: file names, directory names, fixed words, or nothing (a value nobody can guess) */
  complete: 'files' | 'dirs' | 'none' | string[];
  /** `--repair[=all]`: the value may be left out, and is written in the same word after "=" */
  optionalAttached?: boolean;
}

export interface OptionSpec {
  short?: string;
  long: string;
  description: string;
  repeatable: boolean;
  value?: ValueSpec;
}

export interface ArgumentSpec extends ValueSpec {
  required: boolean;
}

export interface CommandSpec {
  name: string;
  description: string;
  options: OptionSpec[];
  args: ArgumentSpec[];
  commands: CommandSpec[];
}

export function completionScript(shell: 'bash' | 'zsh', root: CommandSpec): string {
  return shell === 'bash' ? bash(root) : zsh(root);
}

/** Every command and subcommand with its path from the root ("backup run"). */
function walk(cmd: CommandSpec, path: string[] = []): { path: string[]; cmd: CommandSpec }[] {
  return [{ path, cmd }, ...cmd.commands.flatMap((c) => walk(c, [...path, c.name]))];
}

function flagWords(o: OptionSpec): string[] {
  const words = [...(o.short ? [o.short] : []), o.long];
  return o.value?.optionalAttached && Array.isArray(o.value.complete) ? [...words, ...o.value.complete.map((v) => `${o.long}=${v}`)] : words;
}

function bashValue(v: ValueSpec): string {
  if (v.complete === 'files') return 'mapfile -t COMPREPLY < <(compgen -f -- "$cur")';
  if (v.complete === 'dirs') return 'mapfile -t COMPREPLY < <(compgen -d -- "$cur")';
  if (v.complete === 'none') return ':';
  return `mapfile -t COMPREPLY < <(compgen -W "${v.complete.join(' ')}" -- "$cur")`;
}

function bash(root: CommandSpec): string {
  const all = walk(root);
  const paths = all.filter((x) => x.path.length).map((x) => x.path.join(' '));
  // An option that takes a value (in the next word) completes the same kind of value in every
  // command that has it, so one case on the previous word serves them all.
  const valued = new Map<string, ValueSpec>();
  for (const { cmd } of all) for (const o of cmd.options) if (o.value && !o.value.optionalAttached) for (const f of flagWords(o)) valued.set(f, o.value);
  const byValue = new Map<string, string[]>();
  for (const [flag, v] of valued) byValue.set(bashValue(v), [...(byValue.get(bashValue(v)) ?? []), flag]);
  const q = (s: string) => (s.includes(' ') ? `"${s}"` : s);
  return `# bash completion for ${root.name}: source <(${root.name} completion bash), or save it in
# /etc/bash_completion.d/${root.name}
_${root.name}() {
  local cur=\${COMP_WORDS[COMP_CWORD]} prev=\${COMP_WORDS[COMP_CWORD-1]} path="" next i
  COMPREPLY=()
  # The command path so far: the words before the cursor that name a (sub)command.
  for ((i = 1; i < COMP_CWORD; i++)); do
    next="\${path:+$path }\${COMP_WORDS[i]}"
    case "$next" in
      ${paths.map(q).join('|')}) path=$next ;;
    esac
  done
  case "$prev" in
${[...byValue].map(([action, flags]) => `    ${flags.join('|')}) ${action}; return ;;`).join('\n')}
  esac
  local commands="" flags="" args=""
  case "$path" in
${all
  .map(({ path, cmd }) => {
    const arg = cmd.args[0];
    return `    ${path.length ? q(path.join(' ')) : '""'}) commands="${cmd.commands.map((c) => c.name).join(' ')}"; flags="${cmd.options.flatMap(flagWords).join(' ')}"${arg ? `; args='${bashValue(arg)}'` : ''} ;;`;
  })
  .join('\n')}
  esac
  # Flags once a dash is typed; otherwise subcommands and the command's argument.
  if [[ $cur == -* ]]; then commands=$flags; elif [[ -n $args ]]; then eval "$args"; fi
  local w
  while IFS= read -r w; do COMPREPLY+=("$w"); done < <(compgen -W "$commands" -- "$cur")
}
complete -F _${root.name} ${root.name}
`;
}

/** Text inside a zsh single-quoted word. */
function sq(s: string): string {
  return s.replace(/'/g, `'\\''`);
}

/** Text inside a single-quoted _arguments spec, where [ ] : and \ have meanings. */
function zq(s: string): string {
  return sq(s.replace(/[[\]:\\]/g, (c) => `\\${c}`));
}

function zshAction(v: ValueSpec): string {
  if (v.complete === 'files') return '_files';
  if (v.complete === 'dirs') return '_files -/';
  if (v.complete === 'none') return ' ';
  return `(${v.complete.join(' ')})`;
}

function zshOption(o: OptionSpec): string {
  const desc = `[${zq(o.description)}]`;
  // zsh would complete `--repair=` and wait for a value; offer each spelling as an option instead.
  if (o.value?.optionalAttached)
    return flagWords(o)
      .map((w) => `'${w.replace('=', '\\=')}${desc}'`)
      .join(' ');
  const value = o.value ? `:${zq(o.value.label)}:${zshAction(o.value)}` : '';
  if (!o.short) return `'${o.repeatable ? '*' : ''}${o.long}${desc}${value}'`;
  // Both spellings, offered once (or again and again, for a repeatable option).
  return `${o.repeatable ? `'*'` : `'(${o.short} ${o.long})'`}{${o.short},${o.long}}'${desc}${value}'`;
}

function zshFunction(path: string[], cmd: CommandSpec, rootName: string): string[] {
  const fn = [`_${rootName}`, ...path].join('_').replace(/-/g, '_');
  const specs = cmd.options.map(zshOption);
  if (!cmd.commands.length) {
    const args = cmd.args.map((a, i) => `'${i + 1}:${a.required ? '' : ':'}${zq(a.label)}:${zshAction(a)}'`);
    return [`${fn}() {\n  _arguments -s \\\n    ${[...specs, ...args].join(' \\\n    ')}\n}`];
  }
  // _describe entries are NAME:DESCRIPTION; only the name's colons would need escaping.
  const entries = cmd.commands.map((c) => `'${sq(c.name)}:${sq(c.description)}'`);
  return [
    `${fn}() {
  local curcontext=$curcontext state line
  _arguments -C \\
    ${[...specs, `'1:command:->command'`, `'*::argument:->argument'`].join(' \\\n    ')}
  case $state in
    command)
      local -a commands=(
        ${entries.join('\n        ')}
      )
      _describe -t commands '${zq([rootName, ...path].join(' '))} command' commands ;;
    argument)
      case $words[1] in
${cmd.commands.map((c) => `        ${c.name}) ${fn}_${c.name.replace(/-/g, '_')} ;;`).join('\n')}
      esac ;;
  esac
}`,
    ...cmd.commands.flatMap((c) => zshFunction([...path, c.name], c, rootName)),
  ];
}

function zsh(root: CommandSpec): string {
  return `#compdef ${root.name}
# zsh completion for ${root.name}: source <(${root.name} completion zsh), or save it as _${root.name}
# in a directory of $fpath.
${zshFunction([], root, root.name).join('\n\n')}

if [[ $funcstack[1] = _${root.name} ]]; then
  _${root.name} "$@"
else
  compdef _${root.name} ${root.name}
fi
`;
}
