/**
 * Catalogs for tests, the soak and the bench, made from the shipped one (catalog.yaml), so a
 * variant of a shipped type (kasm-test with a home, or pooled) never drifts from the real entry.
 */
import { readFileSync } from 'node:fs';
import { parse, stringify } from 'yaml';
import { defaultCatalogPath } from '../src/config.ts';

export type CatalogTypeSource = Record<string, unknown>;

/** Every type of the shipped catalog, as written there. */
export function shippedTypes(): CatalogTypeSource[] {
  return (parse(readFileSync(defaultCatalogPath, 'utf8')) as { types: CatalogTypeSource[] }).types;
}

/** One shipped type with `changes` over it (a new id and name, a home, a pool...). */
export function shippedType(id: string, changes: CatalogTypeSource = {}): CatalogTypeSource {
  const type = shippedTypes().find((t) => t.id === id);
  if (!type) throw new Error(`no type "${id}" in ${defaultCatalogPath}`);
  return { ...type, ...changes };
}

/** A catalog file's text holding `types`. */
export function catalogYaml(types: CatalogTypeSource[]): string {
  return stringify({ types });
}
