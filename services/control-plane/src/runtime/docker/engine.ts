/**
 * What every runtime on Docker Engine shares (the Docker and Swarm runtimes, as
 * Traefik's docker and swarm providers share one file): the engine client, the labels that mark
 * deskhub's desktops, reading a container's facts back, and finding its upstream from them.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import Docker from 'dockerode';
import { ConfigError, env } from '@deskhub/config';
import type { Upstream } from '@deskhub/route-stream';
import type { DesktopSpec, HomeStatus } from '../types.ts';

/** `bridge`: the proxy reaches a desktop at its network address; `published`: at a port published on 127.0.0.1. */
export type DockerNetworkMode = 'bridge' | 'published';

/**
 * A dockerode client for DOCKER_HOST (or another variable naming an engine, such as SWARM_HOST)
 * as given in `source`. dockerode reads DOCKER_HOST (and the TLS variables) from process.env by
 * itself; only a different address needs parsing here. A bad value names `variable`.
 */
export function dockerClientFor(source: NodeJS.ProcessEnv, variable = 'DOCKER_HOST'): Docker | undefined {
  const host = source[variable]?.trim();
  if (!host || host === process.env.DOCKER_HOST?.trim()) return undefined;
  return dockerClientAt(host, variable, source.DOCKER_CERT_PATH ? engineCerts(source.DOCKER_CERT_PATH, 'DOCKER_CERT_PATH') : undefined);
}

export interface EngineCerts {
  ca: Buffer;
  cert: Buffer;
  key: Buffer;
}

/** A folder of client certificates as the docker CLI's DOCKER_CERT_PATH holds them (ca.pem, cert.pem, key.pem); throws naming `variable`. */
export function engineCerts(folder: string, variable: string): EngineCerts {
  const read = (file: string) => {
    try {
      return readFileSync(join(folder, file));
    } catch (err) {
      throw new ConfigError(variable, `cannot read ${join(folder, file)}: ${(err as Error).message}`);
    }
  };
  return { ca: read('ca.pem'), cert: read('cert.pem'), key: read('key.pem') };
}

/**
 * A client for one engine address (unix:// or tcp://). With `certs`, tcp:// is TLS with the
 * engine's certificate checked against their CA, and port 2376 by default. Throws naming `variable`.
 */
export function dockerClientAt(host: string, variable: string, certs?: EngineCerts): Docker {
  let url: URL;
  try {
    url = new URL(host);
  } catch {
    throw new ConfigError(variable, `expected unix:///path/to/docker.sock or tcp://host:port, got "${host}"`);
  }
  if (url.protocol === 'unix:') return new Docker({ socketPath: url.pathname });
  if (url.protocol !== 'tcp:' && url.protocol !== 'http:' && url.protocol !== 'https:') throw new ConfigError(variable, `expected unix:// or tcp://, got "${url.protocol}//"`);
  if (!certs) return new Docker({ host: url.hostname, port: Number(url.port || 2375), protocol: 'http' });
  return new Docker({ host: url.hostname, port: Number(url.port || 2376), protocol: 'https', ...certs });
}

/** Where the client talks to, for messages a person reads when the engine does not answer. */
export function engineAddress(docker: Docker): string {
  const modem = docker.modem as unknown as { socketPath?: string; host?: string; port?: number | string };
  if (modem.socketPath) return String(modem.socketPath);
  return `${modem.host ?? 'localhost'}${modem.port ? `:${modem.port}` : ''}`;
}

/** The engine's own message when it gave one (dockerode wraps it in a generic HTTP error). */
export function errorText(err: unknown): string {
  const e = err as { json?: { message?: string }; message?: string };
  return e?.json?.message ?? e?.message ?? String(err);
}

/** The message for an engine that does not answer; one wording, so the catalog and a failed create say the same. */
export function unreachableMessage(docker: Docker, err: unknown): string {
  return `Docker Engine not reachable at ${engineAddress(docker)}: ${errorText(err)}`;
}

/**
 * A failed connection to the engine (no socket, refused, reset, timed out) as an error that names
 * the engine; any other error (the engine's own answer, or one of ours) is returned as it is.
 */
export function asEngineError(docker: Docker, err: unknown): unknown {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  const connection = ['ENOENT', 'ECONNREFUSED', 'ECONNRESET', 'EACCES', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENOTFOUND'];
  if (engineStatus(err) === undefined && code && connection.includes(code)) return new Error(unreachableMessage(docker, err));
  return err;
}

/** The engine's HTTP status for a failed call (404 gone, 304 already so, 409 conflict), if any. */
export function engineStatus(err: unknown): number | undefined {
  return (err as { statusCode?: number } | undefined)?.statusCode;
}

/** DESKHUB_INSTANCE: separates several deskhub installations (or test runs) on one engine or swarm. */
export const instanceSetting = env.custom((raw, name) => {
  if (!/^[a-z0-9][a-z0-9-]{0,39}$/.test(raw)) throw new ConfigError(name, `expected lowercase letters, digits and -, got "${raw}"`);
  return raw;
}, 'default');

/** Label filters that select one installation's desktops. */
export function labelFilters(instance: string): string[] {
  return ['deskhub=1', `deskhub.instance=${instance}`];
}

/** The labels a desktop's container (or service) carries, so deskhub finds it again after any crash. */
export function desktopLabels(spec: DesktopSpec, instance: string): Record<string, string> {
  const type = spec.type;
  return {
    deskhub: '1',
    'deskhub.instance': instance,
    'deskhub.desktop': spec.desktopId,
    'deskhub.owner': spec.ownerId,
    'deskhub.path': spec.proxyPath,
    'deskhub.type': type.id,
    // Enough to rebuild the upstream of a container found after a restart, without the catalog.
    'deskhub.port': String(type.port),
    'deskhub.scheme': type.scheme,
    'deskhub.verify-tls': String(type.verifyTls),
  };
}

/** How the desktop inside is spoken to, as stored in its labels. */
export interface UpstreamSettings {
  port: number;
  scheme: Upstream['scheme'];
  verifyTls: boolean;
}

/** Reads UpstreamSettings back from labels; `fallbackPort` serves containers labelled before deskhub.port existed. */
export function upstreamSettingsFromLabels(labels: Record<string, string>, fallbackPort: number | undefined): UpstreamSettings {
  return {
    port: Number(labels['deskhub.port'] ?? fallbackPort ?? 0),
    scheme: labels['deskhub.scheme'] === 'http' ? 'http' : 'https',
    verifyTls: labels['deskhub.verify-tls'] === 'true',
  };
}

/** What deskhub needs to know of a container, from an inspect or a listing. */
export interface ContainerFacts {
  Id: string;
  Labels: Record<string, string>;
  running: boolean;
  ip: string | undefined;
  publishedPort: number | undefined;
}

export function factsFromInspect(info: Docker.ContainerInspectInfo, networkName: string): ContainerFacts {
  const ports = info.NetworkSettings.Ports ?? {};
  let publishedPort: number | undefined;
  for (const bindings of Object.values(ports)) {
    const binding = bindings?.find((b) => b.HostIp === '127.0.0.1') ?? bindings?.[0];
    if (binding?.HostPort) publishedPort = Number(binding.HostPort);
  }
  return {
    Id: info.Id,
    Labels: info.Config.Labels ?? {},
    running: info.State.Running,
    ip: info.NetworkSettings.Networks?.[networkName]?.IPAddress || undefined,
    publishedPort,
  };
}

export function factsFromListing(c: Docker.ContainerInfo, networkName: string): ContainerFacts {
  return {
    Id: c.Id,
    Labels: c.Labels ?? {},
    running: c.State === 'running',
    ip: c.NetworkSettings?.Networks?.[networkName]?.IPAddress || undefined,
    publishedPort: c.Ports?.find((p) => p.IP === '127.0.0.1' && p.PublicPort)?.PublicPort,
  };
}

/** Where the proxy reaches a running container; undefined while it is not running or has no address yet. */
export function upstreamOf(facts: ContainerFacts, settings: UpstreamSettings, networkMode: DockerNetworkMode): Upstream | undefined {
  if (!facts.running) return undefined;
  const { port, scheme, verifyTls } = settings;
  if (networkMode === 'published') {
    return facts.publishedPort ? { scheme, host: '127.0.0.1', port: facts.publishedPort, verifyTls } : undefined;
  }
  return facts.ip ? { scheme, host: facts.ip, port, verifyTls } : undefined;
}

/** The one wording of why a container ended, for its inspected State and for a `die` event alike. */
export function describeExit(exit: { oomKilled: boolean; exitCode: number | string; neverStarted?: boolean; error?: string }): string {
  if (exit.oomKilled) return `killed: out of memory (exit code ${exit.exitCode})`;
  return `${exit.neverStarted ? 'never started' : `exited with code ${exit.exitCode}`}${exit.error ? `: ${exit.error}` : ''}`;
}

/** Why a container that is not running stopped, as its State says. */
export function exitReason(state: Docker.ContainerInspectInfo['State']): string {
  return describeExit({ oomKilled: state.OOMKilled, exitCode: state.ExitCode, neverStarted: state.Status === 'created', error: state.Error });
}

/** Docker multiplexes stdout and stderr of a container without a TTY into 8-byte-headed frames. */
export function demultiplex(buffer: Buffer): string {
  const parts: Buffer[] = [];
  let offset = 0;
  while (offset + 8 <= buffer.length) {
    const stream = buffer[offset];
    const size = buffer.readUInt32BE(offset + 4);
    // Streams 0-2 are stdin, stdout, stderr; 3 is the engine's own error ("systemerr"), which a
    // swarm service's logs carry when a node cannot be reached.
    if (stream === undefined || stream > 3 || buffer[offset + 1] !== 0 || offset + 8 + size > buffer.length) {
      // Not multiplexed (a TTY container): the bytes are the output.
      return buffer.toString('utf8');
    }
    if (stream !== 3) parts.push(buffer.subarray(offset + 8, offset + 8 + size)); // 3: the engine's, not the desktop's
    offset += 8 + size;
  }
  return Buffer.concat(parts).toString('utf8');
}

/** A home's named volume. */
export function homeVolumeName(homeId: string): string {
  return `deskhub-home-${homeId}`;
}

/** The labels of a home's volume: deskhub, the installation, the home and its owner. */
export function homeVolumeLabels(spec: DesktopSpec, instance: string): Record<string, string> {
  return { deskhub: '1', 'deskhub.instance': instance, 'deskhub.home': spec.home!.id, 'deskhub.owner': spec.ownerId };
}

/**
 * The home's volume, made on first use with labels naming deskhub, the installation, the home
 * and its owner. Docker copies the image's directory (its files and owner, uid 1000 in a Kasm
 * image) into it when it is first mounted, so a new home is the user's to write.
 */
export async function ensureHomeVolume(docker: Docker, spec: DesktopSpec, instance: string, driver?: { Name: string; Options: Record<string, string> }): Promise<string> {
  const name = homeVolumeName(spec.home!.id);
  const labels = homeVolumeLabels(spec, instance);
  // Creating a volume that exists returns it (same driver): idempotent across retries and restarts.
  try {
    await docker.createVolume({ Name: name, Labels: labels, ...(driver ? { Driver: driver.Name, DriverOpts: driver.Options } : {}) });
  } catch (err) {
    throw new Error(`could not make the home's volume ${name}: ${errorText(err)}`);
  }
  return name;
}

/** The engine's home volumes of one installation, with sizes from its disk usage report. */
export async function listHomeVolumes(docker: Docker, filters: string[]): Promise<HomeStatus[]> {
  try {
    const listed = await docker.listVolumes({ filters: { label: [...filters, 'deskhub.home'] } });
    const volumes = listed.Volumes ?? [];
    if (volumes.length === 0) return [];
    // One call for every volume's size.
    const usage = (await docker.df().catch(() => null)) as { Volumes?: Array<{ Name: string; UsageData?: { Size?: number } }> } | null;
    const sizes = new Map((usage?.Volumes ?? []).map((v) => [v.Name, v.UsageData?.Size ?? -1]));
    return volumes.map((v) => {
      const size = sizes.get(v.Name);
      return { homeId: v.Labels?.['deskhub.home'] ?? '', sizeBytes: size !== undefined && size >= 0 ? size : null };
    });
  } catch (err) {
    throw asEngineError(docker, err);
  }
}

/** Deletes a home's volume: a missing one is fine, one a container mounts is refused. */
export async function removeHomeVolume(docker: Docker, homeId: string): Promise<void> {
  try {
    await docker.getVolume(homeVolumeName(homeId)).remove();
  } catch (err) {
    const code = engineStatus(err);
    if (code === 404) return;
    if (code === 409) throw new Error(`home ${homeId} is in use by a container: ${errorText(err)}`);
    throw asEngineError(docker, err);
  }
}

/**
 * A short-lived helper container (homes' moves and shared storage): runs `script` with sh as
 * root, no network, the one mount given; labelled as deskhub's with `labels` saying what for.
 */
export function createHelper(
  docker: Docker,
  helper: { image: string; instance: string; script: string; env?: string[]; labels: Record<string, string>; mount: Docker.MountSettings; workingDir?: string },
): Promise<Docker.Container> {
  return docker.createContainer({
    Image: helper.image,
    User: 'root',
    Entrypoint: ['sh', '-c'],
    Cmd: [helper.script],
    Env: helper.env ?? [],
    ...(helper.workingDir ? { WorkingDir: helper.workingDir } : {}),
    Labels: { deskhub: '1', 'deskhub.instance': helper.instance, ...helper.labels },
    HostConfig: { NetworkMode: 'none', Mounts: [helper.mount] },
  });
}

/** Starts a helper container, waits for it, and resolves with its output (trimmed); rejects on a non-zero exit. */
export async function runToOutput(container: Docker.Container): Promise<string> {
  await container.start();
  const { StatusCode } = (await container.wait()) as { StatusCode: number };
  const output = demultiplex((await container.logs({ stdout: true, stderr: true, follow: false })) as unknown as Buffer).trim();
  if (StatusCode !== 0) throw new Error(`helper exited with ${StatusCode}: ${output}`);
  return output;
}

/**
 * Desktops deskhub itself is stopping or removing: their ends, reported a moment later (engine
 * events, task states), are not news. An entry lasts a minute, plenty for either report.
 */
export class ExpectedEnds {
  private readonly until = new Map<string, number>();

  expect(runtimeId: string): void {
    this.until.set(runtimeId, Date.now() + 60_000);
    for (const [id, time] of this.until) if (time < Date.now()) this.until.delete(id);
  }

  /** Forgets it (the desktop is started again: its next end is news). */
  forget(runtimeId: string): void {
    this.until.delete(runtimeId);
  }

  /** Both sides are full ids: deskhub stores the id the engine returned, reports carry it too. */
  has(runtimeId: string): boolean {
    const time = this.until.get(runtimeId);
    if (time === undefined) return false;
    if (time >= Date.now()) return true;
    this.until.delete(runtimeId);
    return false;
  }
}
