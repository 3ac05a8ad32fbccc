/**
 * The desktop catalog: the YAML file (CATALOG) listing the desktop types users may launch.
 * Read and validated once at start; a bad entry stops start-up with the file, the entry and the
 * field named. Optional fields get their defaults here, so the rest of the code sees complete
 * CatalogEntry values.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { Type, type Static } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { parse as parseYaml } from 'yaml';
import { runtimeNames, type RuntimeName } from './runtime/index.ts';
import { PLACEHOLDERS, substitute } from './placeholders.ts';
import { isSafePathSegment } from './proxy-path.ts';
import { SIZE } from './sizes.ts';
import { DURATION, describeDuration, parseDuration } from './durations.ts';
import type { ClockSettings } from './lifecycle/clocks.ts';
import type { RouteActivity } from '@deskhub/route-stream';


/** One desktop type from the catalog file (CATALOG), validated at start. */
export interface CatalogEntry {
  id: string;
  name: string;
  description?: string;
  runtime: RuntimeName;
  /** docker: image reference, pinned tag. */
  image?: string;
  /** docker: when to pull. `never` for images built locally. */
  pullPolicy?: 'if-missing' | 'always' | 'never';
  /** process: argv; `{port}` is replaced by the port chosen for it. */
  command?: string[];
  /** process: working directory (the catalog file's folder unless the entry says otherwise). */
  workingDir?: string;
  /** Port the desktop listens on inside its container (docker) or the default for process. */
  port: number;
  scheme: 'http' | 'https';
  verifyTls: boolean;
  /** true for kasmweb images; false for linuxserver images that serve under SUBFOLDER. */
  stripPrefix: boolean;
  /** kasm: generate VNC_PW, inject Basic kasm_user:VNC_PW. basic: generate env[passwordEnv], inject Basic username:pw. */
  credentials: { kind: 'none' } | { kind: 'kasm' } | { kind: 'basic'; username: string; passwordEnv: string };
  /** Extra env; `{prefix}` (/desktop/<path>) and `{path}` are substituted. */
  env: Record<string, string>;
  /** docker limits */
  shmSize?: string;
  memory?: string;
  cpus?: number;
  pids?: number;
  readiness: { path: string; timeoutSeconds: number };
  /** Query the entry URL needs, `{prefix}`/`{path}` substituted, e.g. "path=desktop/{path}/websockify". */
  entryQuery: string;
  /** What keeps the idle clock from running: input in the RFB stream (VNC desktops) or any traffic (web apps). */
  activity: RouteActivity;
  /** The idle clocks (lifecycle/clocks.ts): the type's own, else the environment's defaults. */
  clocks: ClockSettings;
  /**
   * A home kept across its desktops' lives, mounted at `path`: one per user and `name` (scope
   * user, shared by the user's types naming the same home), or one per user, `name` and desktop
   * name (scope desktop). Never deleted automatically.
   */
  home?: HomeSetting;
  /**
   * The warm pool: this many started, unowned, ready desktops kept for creates to claim, each
   * recycled after `expireAfterMs` unclaimed or when the type's settings change (`settingsHash`).
   */
  pool?: { size: number; expireAfterMs: number };
  /**
   * Sharing (README: Sharing a desktop): whether desktops of the type may be shared at all, the
   * read-only user a `view` share connects as (same password as the owner's user; null: none, so
   * the type can be shared for control only), and the path prefixes only the owner may reach.
   */
  sharing: SharingSetting;
  /** A hash of what a desktop is made from (image, command, env, limits...): a pool member made from other settings is recycled. */
  settingsHash: string;
  quota?: { perUser?: number; total?: number };
  /** swarm: where the scheduler may place the type's desktops (constraints) and how it spreads them. */
  placement?: { constraints: string[]; spread: string[] };
}

/**
 * The clocks every type gets unless its entry says otherwise (from the environment, config.ts):
 * a null period leaves that clock off; the warnings apply to whichever period is set.
 */
export interface ClockDefaults {
  idleDisconnectAfterMs: number | null;
  idleWarnMs: number;
  expireAfterMs: number | null;
  expireWarnMs: number;
  expireAction: 'stop' | 'delete';
  maxLifetimeMs: number | null;
  maxLifetimeWarnMs: number;
}

export const CLOCK_DEFAULTS: ClockDefaults = {
  idleDisconnectAfterMs: null,
  idleWarnMs: 5 * 60_000,
  expireAfterMs: null,
  expireWarnMs: 10 * 60_000,
  expireAction: 'stop',
  maxLifetimeMs: null,
  maxLifetimeWarnMs: 15 * 60_000,
};

export interface SharingSetting {
  enabled: boolean;
  viewer: string | null;
  ownerOnly: string[];
}

/**
 * What a Kasm image needs (kasm-contract.md): `kasm_viewer` is its read-only user, and KasmVNC
 * serves its owner API under /api/ and the owner's ~/Downloads under /Downloads/ to any signed-in
 * VNC user, so the proxy keeps both to the owner.
 */
export const KASM_SHARING: SharingSetting = Object.freeze({ enabled: true, viewer: 'kasm_viewer', ownerOnly: Object.freeze(['/api/', '/Downloads/']) as string[] });

export interface HomeSetting {
  /** Absolute path inside the desktop (Kasm: /home/kasm-user); the process runtime sets HOME instead. */
  path: string;
  scope: 'user' | 'desktop';
  /** Which home: types naming the same one share it (default: the type's id). */
  name: string;
}

export class CatalogError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CatalogError';
  }
}

const Size = Type.String({ pattern: SIZE.source, description: 'bytes, or with a unit: 512m, 2g' });
const Duration = Type.String({ pattern: DURATION.source, description: 'a duration: 90s, 30m, 2h, 1h30m' });

const EntrySchema = Type.Object(
    {
      id: Type.String({ minLength: 1, maxLength: 32 }),
      name: Type.String({ minLength: 1, maxLength: 100 }),
      description: Type.Optional(Type.String({ maxLength: 1000 })),
      runtime: Type.Union(runtimeNames.map((name) => Type.Literal(name))),
      image: Type.Optional(Type.String({ minLength: 1 })),
      pullPolicy: Type.Optional(Type.Union([Type.Literal('if-missing'), Type.Literal('always'), Type.Literal('never')])),
      command: Type.Optional(Type.Array(Type.String(), { minItems: 1 })),
      workingDir: Type.Optional(Type.String({ minLength: 1 })),
      port: Type.Integer({ minimum: 1, maximum: 65535 }),
      scheme: Type.Optional(Type.Union([Type.Literal('http'), Type.Literal('https')])),
      verifyTls: Type.Optional(Type.Boolean()),
      stripPrefix: Type.Optional(Type.Boolean()),
      credentials: Type.Optional(
        Type.Union([
          Type.Object({ kind: Type.Literal('none') }, { additionalProperties: false }),
          Type.Object({ kind: Type.Literal('kasm') }, { additionalProperties: false }),
          Type.Object(
            { kind: Type.Literal('basic'), username: Type.String({ minLength: 1 }), passwordEnv: Type.String({ pattern: '^[A-Za-z_][A-Za-z0-9_]*$' }) },
            { additionalProperties: false },
          ),
        ]),
      ),
      env: Type.Optional(Type.Record(Type.String({ pattern: '^[A-Za-z_][A-Za-z0-9_]*$' }), Type.String())),
      shmSize: Type.Optional(Size),
      placement: Type.Optional(
        Type.Object(
          {
            constraints: Type.Optional(Type.Array(Type.String({ pattern: '^\\S+\\s*(==|!=)\\s*\\S+$', description: 'a swarm placement constraint: node.labels.gpu==true' }))),
            spread: Type.Optional(Type.Array(Type.String({ pattern: '^node\\.labels\\.[A-Za-z0-9_.-]+$', description: 'spread over the values of a node label: node.labels.zone' }))),
          },
          { additionalProperties: false, description: 'swarm only: where desktops of the type may run' },
        ),
      ),
      memory: Type.Optional(Size),
      cpus: Type.Optional(Type.Number({ exclusiveMinimum: 0, maximum: 1024 })),
      pids: Type.Optional(Type.Integer({ minimum: 1 })),
      readiness: Type.Optional(
        Type.Object(
          { path: Type.Optional(Type.String({ pattern: '^[/{]', description: 'starts with / or {prefix}' })), timeoutSeconds: Type.Optional(Type.Integer({ minimum: 1, maximum: 3600 })) },
          { additionalProperties: false },
        ),
      ),
      entryQuery: Type.Optional(Type.String()),
      activity: Type.Optional(Type.Union([Type.Literal('input'), Type.Literal('traffic')], { description: 'input: key presses, pointer and pastes in the RFB stream; traffic: any request or byte' })),
      rfb: Type.Optional(Type.Union([Type.Literal('kasmvnc'), Type.Literal('standard')], { description: 'the RFB dialect, for activity: input' })),
      home: Type.Optional(
        Type.Object(
          {
            path: Type.String({ pattern: '^/', description: 'absolute path inside the desktop' }),
            scope: Type.Optional(Type.Union([Type.Literal('user'), Type.Literal('desktop')])),
            name: Type.Optional(Type.String({ minLength: 1, maxLength: 32 })),
          },
          { additionalProperties: false, description: "a home kept across its desktops' lives" },
        ),
      ),
      pool: Type.Optional(
        Type.Object(
          {
            size: Type.Integer({ minimum: 0, maximum: 100, description: 'ready desktops kept for creates to claim' }),
            expireAfter: Type.Optional(Duration),
          },
          { additionalProperties: false, description: 'the warm pool' },
        ),
      ),
      idle: Type.Optional(
        Type.Union([
          Type.Literal(false),
          Type.Object({ disconnectAfter: Duration, warn: Type.Optional(Duration) }, { additionalProperties: false }),
        ], { description: 'no input for disconnectAfter: its streams are disconnected, the desktop keeps running; false: never' }),
      ),
      expire: Type.Optional(
        Type.Union([
          Type.Literal(false),
          Type.Object(
            { after: Duration, warn: Type.Optional(Duration), action: Type.Optional(Type.Union([Type.Literal('stop'), Type.Literal('delete')])) },
            { additionalProperties: false },
          ),
        ], { description: 'nobody connected for after: stop (default) or delete it; false: never' }),
      ),
      maxLifetime: Type.Optional(
        Type.Union([
          Type.Literal(false),
          Duration,
          Type.Object({ after: Duration, warnBefore: Type.Optional(Duration) }, { additionalProperties: false }),
        ], { description: 'stopped this long after it started; false: never' }),
      ),
      sharing: Type.Optional(
        Type.Union([
          Type.Literal(false),
          Type.Object(
            {
              viewer: Type.Optional(Type.Union([Type.Literal(false), Type.String({ pattern: '^[A-Za-z0-9._-]{1,64}$' })], { description: 'the read-only user a view share connects as (same password); false: none' })),
              ownerOnly: Type.Optional(Type.Array(Type.String({ pattern: '^/[\\x21-\\x7e]{0,255}$' }), { maxItems: 32, description: 'path prefixes under the desktop only its owner reaches' })),
            },
            { additionalProperties: false },
          ),
        ], { description: 'sharing with other users; false: never shared' }),
      ),
      quota: Type.Optional(
        Type.Object(
          { perUser: Type.Optional(Type.Integer({ minimum: 0 })), total: Type.Optional(Type.Integer({ minimum: 0 })) },
          { additionalProperties: false },
        ),
      ),
    },
    { additionalProperties: false },
  );

type EntryInput = Static<typeof EntrySchema>;

export interface Catalog {
  /** The file it was read from. */
  file: string;
  entries: CatalogEntry[];
  get(id: string): CatalogEntry | undefined;
}

function checkPlaceholders(value: string, allowed: string[], where: string): void {
  for (const m of value.matchAll(PLACEHOLDERS)) {
    if (!allowed.includes(m[1]!)) {
      throw new CatalogError(`${where}: unknown placeholder {${m[1]}} (allowed: ${allowed.map((a) => `{${a}}`).join(', ')})`);
    }
  }
}

/** Reads and validates a catalog file. `defaultReadyTimeoutS` fills readiness.timeoutSeconds. */
export function loadCatalog(file: string, options: { defaultReadyTimeoutS?: number; clocks?: ClockDefaults } = {}): Catalog {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new CatalogError(`CATALOG: cannot read ${file}: ${(err as Error).message}`);
  }
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    throw new CatalogError(`${file}: not valid YAML: ${(err as Error).message}`);
  }
  const list = (doc as { types?: unknown } | null)?.types;
  if (!doc || typeof doc !== 'object' || !Array.isArray(list)) {
    throw new CatalogError(`${file}: expected a top-level "types:" list of desktop types`);
  }
  const extra = Object.keys(doc).filter((k) => k !== 'types');
  if (extra.length > 0) throw new CatalogError(`${file}: unknown top-level field "${extra[0]}" (expected only "types")`);

  const catalogDir = path.dirname(path.resolve(file));
  const entries: CatalogEntry[] = [];
  const seen = new Set<string>();
  list.forEach((raw: unknown, index: number) => {
    const id = raw && typeof raw === 'object' && typeof (raw as { id?: unknown }).id === 'string' ? (raw as { id: string }).id : undefined;
    const where = `${file}: entry ${id ? `"${id}"` : `#${index + 1}`}`;
    const firstError = Value.Errors(EntrySchema, raw).First();
    if (firstError) {
      const field = firstError.path.replace(/^\//, '').replace(/\//g, '.') || '(entry)';
      throw new CatalogError(`${where}, field "${field}": ${firstError.message}`);
    }
    const input = raw as EntryInput;
    if (!isSafePathSegment(input.id)) {
      throw new CatalogError(`${where}, field "id": must be lowercase letters, digits and "-" (it becomes part of desktop paths)`);
    }
    if (seen.has(input.id)) throw new CatalogError(`${where}, field "id": duplicate id`);
    seen.add(input.id);
    entries.push(normalize(input, where, catalogDir, options.defaultReadyTimeoutS ?? 120, options.clocks ?? CLOCK_DEFAULTS));
  });
  if (entries.length === 0) throw new CatalogError(`${file}: the "types" list is empty`);
  const byId = new Map(entries.map((e) => [e.id, e]));
  return { file, entries, get: (id) => byId.get(id) };
}

/**
 * Kasm images (credentials kasm) speak KasmVNC's RFB, so their default is input in that dialect;
 * anything else defaults to traffic. Input without a dialect, outside Kasm images, must say which.
 */
function activityOf(input: EntryInput, credentials: string, where: string): RouteActivity {
  const on = input.activity ?? (credentials === 'kasm' ? 'input' : 'traffic');
  if (on === 'traffic') {
    if (input.rfb !== undefined) throw new CatalogError(`${where}, field "rfb": only for activity: input`);
    return { on: 'traffic' };
  }
  const rfb = input.rfb ?? (credentials === 'kasm' ? 'kasmvnc' : undefined);
  if (rfb === undefined) {
    throw new CatalogError(`${where}, field "rfb": required with activity: input (kasmvnc for KasmVNC, standard for x11vnc, TigerVNC and other RFB servers)`);
  }
  return { on: 'input', rfb };
}

function sharingOf(input: EntryInput, credentials: CatalogEntry['credentials'], where: string): SharingSetting {
  if (input.sharing === false) return { enabled: false, viewer: null, ownerOnly: [] };
  const base = credentials.kind === 'kasm' ? KASM_SHARING : { enabled: true, viewer: null, ownerOnly: [] };
  const viewer = input.sharing?.viewer === undefined ? base.viewer : input.sharing.viewer === false ? null : input.sharing.viewer;
  if (viewer !== null && credentials.kind === 'none') {
    throw new CatalogError(`${where}, field "sharing.viewer": a read-only user needs credentials (kasm or basic) to share its password`);
  }
  for (const prefix of input.sharing?.ownerOnly ?? []) {
    if (/[?#]/.test(prefix)) throw new CatalogError(`${where}, field "sharing.ownerOnly": "${prefix}" is a path prefix, without "?" or "#"`);
  }
  return { enabled: true, viewer, ownerOnly: [...(input.sharing?.ownerOnly ?? base.ownerOnly)] };
}

/** What a desktop of the type is made from, hashed: names, descriptions, clocks and pool size left out. */
function settingsHash(entry: CatalogEntry): string {
  const { runtime, image, command, workingDir, port, scheme, verifyTls, stripPrefix, credentials, env, shmSize, memory, cpus, pids, readiness, placement } = entry;
  const made = { runtime, image, command, workingDir, port, scheme, verifyTls, stripPrefix, credentials, env, shmSize, memory, cpus, pids, readiness, placement };
  return createHash('sha256').update(JSON.stringify(made)).digest('hex').slice(0, 16);
}

/** A warning must start after its clock does: "warn" shorter than the period it warns about. */
function warnWithin(where: string, field: string, warnMs: number, periodMs: number, periodField: string): number {
  if (warnMs >= periodMs) {
    throw new CatalogError(`${where}, field "${field}": the warning (${describeDuration(warnMs)}) must be shorter than ${periodField} (${describeDuration(periodMs)})`);
  }
  return warnMs;
}

/** The type's clocks: its own fields, else the environment's defaults; false turns one off. */
function clocksOf(input: EntryInput, where: string, d: ClockDefaults, activity: RouteActivity): ClockSettings {
  const ms = (text: string, field: string): number => {
    try {
      return parseDuration(text, field);
    } catch (err) {
      throw new CatalogError(`${where}, field "${field}": ${(err as Error).message}`);
    }
  };
  const clocks: ClockSettings = { idle: null, expire: null, lifetime: null };
  if (input.idle !== false) {
    const after = input.idle ? ms(input.idle.disconnectAfter, 'idle.disconnectAfter') : d.idleDisconnectAfterMs;
    if (after !== null) {
      const warn = input.idle?.warn !== undefined ? ms(input.idle.warn, 'idle.warn') : d.idleWarnMs;
      clocks.idle = { disconnectAfterMs: after, warnMs: warnWithin(where, 'idle.warn', warn, after, 'idle.disconnectAfter'), counts: activity.on };
    }
  }
  if (input.expire !== false) {
    const after = input.expire ? ms(input.expire.after, 'expire.after') : d.expireAfterMs;
    if (after !== null) {
      const warn = input.expire?.warn !== undefined ? ms(input.expire.warn, 'expire.warn') : d.expireWarnMs;
      clocks.expire = { afterMs: after, warnMs: warnWithin(where, 'expire.warn', warn, after, 'expire.after'), action: input.expire?.action ?? d.expireAction };
    }
  }
  if (input.maxLifetime !== false) {
    const given = input.maxLifetime;
    const max = given === undefined ? d.maxLifetimeMs : ms(typeof given === 'string' ? given : given.after, typeof given === 'string' ? 'maxLifetime' : 'maxLifetime.after');
    if (max !== null) {
      const warn = typeof given === 'object' && given.warnBefore !== undefined ? ms(given.warnBefore, 'maxLifetime.warnBefore') : d.maxLifetimeWarnMs;
      clocks.lifetime = { maxMs: max, warnMs: warnWithin(where, 'maxLifetime.warnBefore', warn, max, 'maxLifetime') };
    }
  }
  return clocks;
}

/**
 * Kasm's client runs its own idle timer inside an iframe (`idle_disconnect`, minutes, from its
 * query string; 20 by default, and no value turns it off) and then replaces itself with a
 * disconnected page. deskhub's clock sees more input than the client's (the wheel, pastes) and
 * is the one in charge, so the client's is set past it: a week, or an hour past deskhub's own.
 */
export function withKasmIdleSetting(entryQuery: string, clocks: ClockSettings): string {
  if (/(^|&)idle_disconnect=/.test(entryQuery)) return entryQuery; // the catalog said it itself
  const minutes = Math.max(7 * 24 * 60, clocks.idle ? Math.ceil(clocks.idle.disconnectAfterMs / 60_000) + 60 : 0);
  return entryQuery === '' ? `idle_disconnect=${minutes}` : `${entryQuery}&idle_disconnect=${minutes}`;
}

/**
 * The client in a Kasm type's page connects again by itself after the server closed its WebSocket
 * only with `reconnect=true` in its query (off by default in KasmVNC 1.5.0's client, on inside an
 * iframe in later ones; noVNC 1.3, the local `desktop` image's client, has the same option, off by
 * default, and then reconnects after `reconnect_delay`, 5 s). A proxy replica that restarts closes
 * its WebSockets with 1001 (a clean close): with it set, the desktop comes back through another
 * replica, in the UI's iframe and in a tab of its own alike. A close that ends access (4000 held
 * disconnected, 4001 share revoked) is followed by a refused upgrade, which these clients take as a
 * failure and stop. A catalog's own `reconnect=` is kept.
 */
export function withKasmReconnect(entryQuery: string): string {
  if (/(^|&)reconnect=/.test(entryQuery)) return entryQuery; // the catalog said it itself
  return entryQuery === '' ? 'reconnect=true' : `${entryQuery}&reconnect=true`;
}

function normalize(input: EntryInput, where: string, catalogDir: string, defaultTimeout: number, clockDefaults: ClockDefaults): CatalogEntry {
  if (input.runtime !== 'process') {
    if (!input.image) throw new CatalogError(`${where}, field "image": required for runtime ${input.runtime}`);
    if (input.command) throw new CatalogError(`${where}, field "command": only for runtime process`);
    if (input.workingDir) throw new CatalogError(`${where}, field "workingDir": only for runtime process`);
  } else {
    if (!input.command) throw new CatalogError(`${where}, field "command": required for runtime process`);
    if (input.image) throw new CatalogError(`${where}, field "image": only for runtimes docker and swarm`);
  }
  if (input.placement && input.runtime !== 'swarm') throw new CatalogError(`${where}, field "placement": only for runtime swarm (the swarm's scheduler places desktops)`);
  const envAllowed = ['prefix', 'path', ...(input.runtime === 'process' ? ['port'] : [])];
  for (const [name, value] of Object.entries(input.env ?? {})) checkPlaceholders(value, envAllowed, `${where}, field "env.${name}"`);
  checkPlaceholders(input.entryQuery ?? '', ['prefix', 'path'], `${where}, field "entryQuery"`);
  checkPlaceholders(input.readiness?.path ?? '/', ['prefix', 'path'], `${where}, field "readiness.path"`);
  if (input.entryQuery?.startsWith('?')) throw new CatalogError(`${where}, field "entryQuery": write it without the leading "?"`);
  const command = input.command?.map((arg, i) => {
    checkPlaceholders(arg, ['node', 'catalogDir', 'port'], `${where}, field "command.${i}"`);
    // Resolved now, so runtimes and stored records see absolute, final values.
    return substitute(arg, { node: process.execPath, catalogDir });
  });
  const credentials = input.credentials ?? { kind: 'none' as const };
  const generated = credentials.kind === 'basic' ? credentials.passwordEnv : credentials.kind === 'kasm' ? 'VNC_PW' : null;
  if (generated && input.env?.[generated] !== undefined) {
    throw new CatalogError(`${where}, field "env.${generated}": generated by the credentials recipe; do not set it`);
  }
  const activity = activityOf(input, credentials.kind, where);
  const entry: CatalogEntry = {
    sharing: sharingOf(input, credentials, where),
    activity,
    clocks: clocksOf(input, where, clockDefaults, activity),
    settingsHash: '',
    id: input.id,
    name: input.name,
    runtime: input.runtime,
    port: input.port,
    scheme: input.scheme ?? 'http',
    verifyTls: input.verifyTls ?? true,
    stripPrefix: input.stripPrefix ?? true,
    credentials,
    env: input.env ?? {},
    readiness: { path: input.readiness?.path ?? '/', timeoutSeconds: input.readiness?.timeoutSeconds ?? defaultTimeout },
    entryQuery: input.entryQuery ?? '',
  };
  if (credentials.kind === 'kasm') entry.entryQuery = withKasmReconnect(withKasmIdleSetting(entry.entryQuery, entry.clocks));
  if (input.description !== undefined) entry.description = input.description;
  if (input.image !== undefined) entry.image = input.image;
  if (input.runtime !== 'process') entry.pullPolicy = input.pullPolicy ?? 'if-missing';
  if (input.placement) entry.placement = { constraints: input.placement.constraints ?? [], spread: input.placement.spread ?? [] };
  if (command) {
    entry.command = command;
    entry.workingDir = path.resolve(catalogDir, input.workingDir ?? '.');
  }
  if (input.shmSize !== undefined) entry.shmSize = input.shmSize;
  if (input.memory !== undefined) entry.memory = input.memory;
  if (input.cpus !== undefined) entry.cpus = input.cpus;
  if (input.pids !== undefined) entry.pids = input.pids;
  if (input.quota !== undefined) entry.quota = input.quota;
  if (input.pool !== undefined && input.pool.size > 0) {
    // A pool member starts before anyone owns it: nothing it is made from may depend on its owner.
    if (input.home) throw new CatalogError(`${where}, field "pool": a type with a home cannot be pooled (the home depends on who claims the desktop, and the runtime mounts it at start)`);
    for (const [name, value] of Object.entries(input.env ?? {})) {
      if (/\{(prefix|path)\}/.test(value)) throw new CatalogError(`${where}, field "pool": a type whose env.${name} names {prefix} or {path} cannot be pooled (they depend on who claims the desktop)`);
    }
    let expireAfterMs = 4 * 3_600_000;
    if (input.pool.expireAfter !== undefined) {
      try {
        expireAfterMs = parseDuration(input.pool.expireAfter, 'pool.expireAfter');
      } catch (err) {
        throw new CatalogError(`${where}, field "pool.expireAfter": ${(err as Error).message}`);
      }
    }
    entry.pool = { size: input.pool.size, expireAfterMs };
  }
  if (input.home !== undefined) {
    const name = input.home.name ?? input.id;
    if (!isSafePathSegment(name)) throw new CatalogError(`${where}, field "home.name": must be lowercase letters, digits and "-"`);
    if (input.home.path === '/' || input.home.path.split('/').includes('..')) throw new CatalogError(`${where}, field "home.path": a directory below / without ".."`);
    entry.home = { path: input.home.path.replace(/\/+$/, ''), scope: input.home.scope ?? 'user', name };
  }
  entry.settingsHash = settingsHash(entry);
  return entry;
}
