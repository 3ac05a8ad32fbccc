/**
 * `{name}` placeholders in catalog values (`{path}`, `{prefix}`, the process runtime's `{port}`).
 * A module of its own so the runtimes can fill them without importing the catalog, which imports
 * the runtime registry for the runtime names.
 */
export const PLACEHOLDERS = /\{(\w+)\}/g;

/**
 * Replaces `{name}` placeholders that appear in `values`; unknown ones stay as they are, so a
 * later step (the process runtime's `{port}`) can fill them.
 */
export function substitute(template: string, values: Record<string, string>): string {
  return template.replace(PLACEHOLDERS, (whole, name: string) => values[name] ?? whole);
}
