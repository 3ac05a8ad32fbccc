/** Typed environment variables with errors that name the variable. */

export class ConfigError extends Error {
  readonly variable: string;
  constructor(variable: string, message: string) {
    super(`${variable}: ${message}`);
    this.name = 'ConfigError';
    this.variable = variable;
  }
}

/** Reads one variable; `undefined` means "unset" (empty strings count as unset). */
export interface EnvVar<T> {
  readonly parse: (raw: string | undefined, name: string) => T;
}

type Parser<T> = (raw: string, name: string) => T;

function variable<T>(parse: Parser<T>, fallback: T | (() => T)): EnvVar<T>;
function variable<T>(parse: Parser<T>): EnvVar<T | undefined>;
function variable<T>(parse: Parser<T>, ...rest: unknown[]): EnvVar<T | undefined> {
  const hasFallback = rest.length > 0;
  const fallback = rest[0] as T | (() => T) | undefined;
  return {
    parse(raw, name) {
      if (raw === undefined || raw.trim() === '') {
        if (!hasFallback) return undefined;
        return typeof fallback === 'function' ? (fallback as () => T)() : fallback;
      }
      return parse(raw.trim(), name);
    },
  };
}

function parseInteger(min: number, max: number): Parser<number> {
  return (raw, name) => {
    if (!/^-?\d+$/.test(raw)) throw new ConfigError(name, `expected a whole number, got "${raw}"`);
    const n = Number(raw);
    if (n < min || n > max) throw new ConfigError(name, `expected a number from ${min} to ${max}, got ${n}`);
    return n;
  };
}

function parseUrl(protocols: string[]): Parser<string> {
  return (raw, name) => {
    let url: URL;
    try {
      url = new URL(raw);
    } catch {
      throw new ConfigError(name, `expected a URL, got "${raw}"`);
    }
    if (protocols.length > 0 && !protocols.includes(url.protocol.replace(/:$/, ''))) {
      throw new ConfigError(name, `expected a ${protocols.join(' or ')} URL, got "${url.protocol}//…"`);
    }
    return raw.replace(/\/+$/, '');
  };
}

function parseOneOf<const T extends string>(values: readonly T[]): Parser<T> {
  return (raw, name) => {
    if (!(values as readonly string[]).includes(raw)) {
      throw new ConfigError(name, `expected one of ${values.join(', ')}, got "${raw}"`);
    }
    return raw as T;
  };
}

const parseBool: Parser<boolean> = (raw, name) => {
  const v = raw.toLowerCase();
  if (['1', 'true', 'yes', 'on'].includes(v)) return true;
  if (['0', 'false', 'no', 'off'].includes(v)) return false;
  throw new ConfigError(name, `expected true or false, got "${raw}"`);
};

const parseList: Parser<string[]> = (raw) =>
  raw.split(',').map((s) => s.trim()).filter((s) => s.length > 0);

/** Builders for the variables a service reads. */
export const env = {
  string: <D extends string | undefined = undefined>(fallback?: D) =>
    (fallback === undefined ? variable((raw) => raw) : variable((raw) => raw, fallback)) as EnvVar<D extends string ? string : string | undefined>,
  int: (fallback: number, min = 0, max = Number.MAX_SAFE_INTEGER) => variable(parseInteger(min, max), fallback),
  optionalInt: (min = 0, max = Number.MAX_SAFE_INTEGER) => variable(parseInteger(min, max)),
  port: (fallback: number) => variable(parseInteger(0, 65535), fallback),
  url: (protocols: string[], fallback?: string) =>
    (fallback === undefined ? variable(parseUrl(protocols)) : variable(parseUrl(protocols), fallback)),
  oneOf: <const T extends string>(values: readonly T[], fallback: T) => variable(parseOneOf(values), fallback),
  bool: (fallback: boolean) => variable(parseBool, fallback),
  list: (fallback: string[] = []) => variable(parseList, fallback),
  custom: <T>(parse: (raw: string, name: string) => T, fallback: T) => variable(parse, fallback),
};

export type EnvSpec = Record<string, EnvVar<unknown>>;
export type ConfigOf<S extends EnvSpec> = { [K in keyof S]: S[K] extends EnvVar<infer T> ? T : never };

/** Reads every variable of `spec` from `source`; throws ConfigError naming the first bad one. */
export function loadConfig<S extends EnvSpec>(spec: S, source: NodeJS.ProcessEnv = process.env): ConfigOf<S> {
  const out: Record<string, unknown> = {};
  for (const [name, v] of Object.entries(spec)) {
    out[name] = v.parse(source[name], name);
  }
  return out as ConfigOf<S>;
}
