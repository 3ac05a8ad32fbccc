/**
 * Homes on storage every engine reaches (HOME_VOLUME_DRIVER, HOME_VOLUME_OPTIONS), for the Docker
 * and Swarm runtimes alike. Each home is still a named volume, `deskhub-home-<id>`, but one of the
 * given driver and options, with `{home}` replaced by the home's id; every engine that runs one of
 * its desktops makes its own volume object naming the same storage. So a home is pinned to no
 * node: a desktop started anywhere sees the same files.
 *
 * Two kinds of driver:
 *   - `local` with mount options (`type=nfs`, `type=cifs`, or `o=bind` on a cluster filesystem
 *     mounted at the same path on every host): `device` must end in `/{home}`. The folder above it
 *     is the homes' root; deskhub makes each home's folder there before its first desktop (the
 *     local driver mounts, it does not make folders) and deletes it with the home, through a
 *     short-lived helper container (HOME_HELPER_IMAGE) that mounts the root. Sizes come from it too.
 *   - a volume plugin (any other name): the plugin keeps one volume's storage per name; deskhub
 *     passes the options (`{home}` replaced where given) and deletes the volume with the home.
 *
 * Docker copies the image's home folder (files and owner) into a home's empty folder when it is
 * first mounted, as with a local volume: on NFS the export must let root set owners
 * (`no_root_squash`), as for any Docker volume on NFS.
 */
import Docker from 'dockerode';
import { ConfigError, env, type ConfigOf } from '@deskhub/config';
import type { Availability, HomeStatus } from '../types.ts';
import { pinnedImage } from './images.ts';
import { createHelper, errorText, removeHomeVolume, runToOutput } from './engine.ts';

/** A volume driver and its options, `{home}` standing for the home's id. */
export interface HomeStorage {
  driver: string;
  options: Record<string, string>;
}

const DEFAULT_HELPER_IMAGE = 'deskhub/deskhub:local';

/** The local driver's options (moby volume/local: validOpts). */
const LOCAL_OPTIONS = new Set(['type', 'o', 'device', 'size']);
const HOME_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export const homeStorageEnvSpec = {
  /** Unset: each home is a local volume on the engine (the Swarm runtime: on one node, pinned there). */
  HOME_VOLUME_DRIVER: env.custom((raw, name) => {
    if (!/^[A-Za-z0-9][A-Za-z0-9_./:-]{0,127}$/.test(raw)) throw new ConfigError(name, `"${raw}" is not a volume driver name (local, or a plugin such as vieux/sshfs:latest)`);
    return raw;
  }, undefined as string | undefined),
  /** `key=value;key=value` (a value may hold `=` and `,`: `o=addr=10.0.0.5,rw,nfsvers=4.1`). */
  HOME_VOLUME_OPTIONS: env.custom((raw, name) => parseVolumeOptions(raw, name), undefined as Record<string, string> | undefined),
  /** The helper image that makes, sizes and deletes homes' folders (local driver): it needs sh, mkdir, du and rm. */
  HOME_HELPER_IMAGE: env.string(DEFAULT_HELPER_IMAGE),
};

function parseVolumeOptions(raw: string, name: string): Record<string, string> {
  const options: Record<string, string> = {};
  for (const entry of raw.split(';').map((e) => e.trim()).filter(Boolean)) {
    const at = entry.indexOf('=');
    if (at <= 0) throw new ConfigError(name, `expected key=value pairs separated by ";" (type=nfs;o=addr=10.0.0.5,rw;device=:/export/homes/{home}), got "${entry}"`);
    const key = entry.slice(0, at).trim();
    if (key in options) throw new ConfigError(name, `"${key}" is given twice`);
    options[key] = entry.slice(at + 1).trim();
  }
  if (Object.keys(options).length === 0) throw new ConfigError(name, 'is empty');
  return options;
}

/**
 * The shared storage the settings describe, checked as a whole; undefined without
 * HOME_VOLUME_DRIVER. Throws a ConfigError naming the setting that is wrong.
 */
export function homeStorageFrom(config: { HOME_VOLUME_DRIVER: string | undefined; HOME_VOLUME_OPTIONS: Record<string, string> | undefined }): HomeStorage | undefined {
  const driver = config.HOME_VOLUME_DRIVER;
  const options = config.HOME_VOLUME_OPTIONS ?? {};
  if (!driver) {
    if (config.HOME_VOLUME_OPTIONS) throw new ConfigError('HOME_VOLUME_OPTIONS', 'is set without HOME_VOLUME_DRIVER: name the driver (local, or a volume plugin)');
    return undefined;
  }
  if (driver !== 'local') return { driver, options };
  const unknown = Object.keys(options).filter((k) => !LOCAL_OPTIONS.has(k));
  if (unknown.length > 0) throw new ConfigError('HOME_VOLUME_OPTIONS', `the local driver takes type, o, device and size, not ${unknown.join(', ')}`);
  if (!options.type || !options.device) {
    throw new ConfigError('HOME_VOLUME_OPTIONS', 'the local driver needs type and device, e.g. type=nfs;o=addr=10.0.0.5,rw,nfsvers=4.1;device=:/export/homes/{home} (without them every home would be a volume on one engine)');
  }
  if (options.type === 'tmpfs') throw new ConfigError('HOME_VOLUME_OPTIONS', 'type=tmpfs lives in one engine\'s memory: it is neither shared nor kept');
  if (!options.device.endsWith('/{home}') || options.device.indexOf('{home}') !== options.device.length - '{home}'.length) {
    throw new ConfigError('HOME_VOLUME_OPTIONS', `device must end in /{home}, the home's own folder (e.g. :/export/homes/{home}); got "${options.device}", which would give every home the same files`);
  }
  return { driver, options };
}

/** The home storage settings (HOME_VOLUME_*), checked as a whole, as a runtime's options. */
export function optionalHomeStorage(config: ConfigOf<typeof homeStorageEnvSpec>): { homeStorage?: HomeStorage; homeHelperImage?: string } {
  const storage = homeStorageFrom(config);
  return storage ? { homeStorage: storage, homeHelperImage: config.HOME_HELPER_IMAGE } : {};
}

/** The runtime's shared homes, when its options name a storage (both Docker runtimes build theirs here). */
export function sharedHomesFor(options: { homeStorage?: HomeStorage; homeHelperImage?: string }, docker: Docker, instance: string): SharedHomes | undefined {
  return options.homeStorage ? new SharedHomes(options.homeStorage, { docker, image: options.homeHelperImage ?? DEFAULT_HELPER_IMAGE, instance }) : undefined;
}

/** Where helpers run: an engine that reaches the storage, and the image they run. */
export interface HelperSite {
  docker: Docker;
  image: string;
  instance: string;
}

export class SharedHomes {
  constructor(
    readonly storage: HomeStorage,
    private readonly site: HelperSite,
  ) {}

  /** Whether deskhub makes and deletes each home's folder (the local driver with a device). */
  get foldered(): boolean {
    return this.storage.driver === 'local';
  }

  /** The volume's driver and options for this home (`{home}` replaced). */
  driverConfig(homeId: string): { Name: string; Options: Record<string, string> } {
    const options = Object.fromEntries(Object.entries(this.storage.options).map(([k, v]) => [k, v.replaceAll('{home}', homeId)]));
    return { Name: this.storage.driver, Options: options };
  }

  /** Whether a type with a home can run here: not when the storage's plugin or helper image is missing. */
  async availability(typeId: string): Promise<Availability> {
    const problem = await this.problem().catch((err: unknown) => `the homes' storage could not be checked: ${errorText(err)}`);
    return problem ? { ok: false, reason: `desktop type ${typeId} keeps a home: ${problem}` } : { ok: true };
  }

  /** What keeps it from working here, or undefined: the plugin, or the helper image, must be on the helpers' engine. */
  private async problem(): Promise<string | undefined> {
    if (!this.foldered) {
      const info = (await this.site.docker.info()) as { Plugins?: { Volume?: string[] } };
      const plugins = info.Plugins?.Volume ?? [];
      const bare = this.storage.driver.replace(/:latest$/, '');
      if (!plugins.some((p) => p === this.storage.driver || p === bare)) {
        return `HOME_VOLUME_DRIVER=${this.storage.driver}: the engine has no such volume plugin (it has ${plugins.join(', ') || 'none'}); install it with docker plugin install`;
      }
      return undefined;
    }
    try {
      await this.site.docker.getImage(this.site.image).inspect();
      return undefined;
    } catch {
      return `HOME_HELPER_IMAGE=${this.site.image} is not on the engine: homes on shared storage need it to make, size and delete their folders (build it with deploy/images/build.sh deskhub, or name another image with sh, mkdir, du and rm)`;
    }
  }

  /** Makes the home's folder under the root (local driver), so its volume can be mounted. Idempotent. */
  async prepare(homeId: string): Promise<void> {
    if (!this.foldered) return;
    await this.helper(homeId, 'mkdir -p -- "/homes/$HOME_ID"');
  }

  /** Every home folder under the root with its size (local driver), else the engine's volumes of this driver (sizes unknown). */
  async list(labelFilters: string[]): Promise<HomeStatus[]> {
    if (!this.foldered) {
      const listed = await this.site.docker.listVolumes({ filters: { label: [...labelFilters, 'deskhub.home'], driver: [this.storage.driver] } });
      return (listed.Volumes ?? []).map((v) => ({ homeId: v.Labels?.['deskhub.home'] ?? '', sizeBytes: null }));
    }
    const output = await this.helper(undefined, 'cd /homes && for d in */; do [ -d "$d" ] && du -sk -- "$d"; done; true');
    const homes: HomeStatus[] = [];
    for (const line of output.split('\n')) {
      const match = /^(\d+)\s+(.+?)\/?$/.exec(line.trim());
      if (match && HOME_ID.test(match[2]!)) homes.push({ homeId: match[2]!, sizeBytes: Number(match[1]) * 1024 });
    }
    return homes;
  }

  /**
   * Deletes the home: its volume object on each engine given (a volume a container mounts is
   * refused there), then its folder (local driver). A missing one is not an error.
   */
  async remove(homeId: string, engines: Docker[]): Promise<void> {
    for (const engine of engines) await removeHomeVolume(engine, homeId);
    if (this.foldered) await this.helper(homeId, 'rm -rf -- "/homes/$HOME_ID"');
  }

  /**
   * Runs a command in a helper container that mounts the homes' root at /homes: an anonymous
   * volume of the same driver and options, the device one folder up (removed with the helper;
   * removing a local volume with a device unmounts it and leaves the files).
   */
  private async helper(homeId: string | undefined, script: string): Promise<string> {
    if (homeId !== undefined && !HOME_ID.test(homeId)) throw new Error(`not a home id: ${homeId}`);
    const { docker, instance } = this.site;
    const root = { ...this.storage.options, device: this.storage.options.device!.slice(0, -'/{home}'.length) || '/' };
    const container = await createHelper(docker, {
      image: await pinnedImage(docker, this.site.image),
      instance,
      script,
      env: homeId ? [`HOME_ID=${homeId}`] : [],
      labels: { 'deskhub.home-helper': homeId ?? 'list' },
      mount: { Type: 'volume', Source: '', Target: '/homes', VolumeOptions: { NoCopy: true, Labels: { deskhub: '1', 'deskhub.instance': instance }, DriverConfig: { Name: 'local', Options: root } } },
    });
    try {
      return await runToOutput(container);
    } catch (err) {
      throw new Error(`a helper on the homes' storage (${root.device}, image ${this.site.image}) failed: ${errorText(err)}`);
    } finally {
      await container.remove({ force: true, v: true }).catch(() => undefined);
    }
  }
}
