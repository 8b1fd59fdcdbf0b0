// What an xfs protofile cannot spell: it is split on white space, and "$" ends a directory.
// Pure: shared by the plan-time check of a directory and the protofile writer.
export const protofileProblem = (token: string): boolean => /\s/.test(token) || token === '$';
