/**
 * Getting a desktop type's image onto the engine: the pull policy, pull progress as runtime
 * events, and error messages that name the image (the lifecycle puts them in the desktop's
 * failed reason as they are).
 */
import type Docker from 'dockerode';
import type { CatalogEntry } from '../../catalog.ts';
import type { RuntimeEvent } from '../types.ts';
import { engineStatus, errorText } from './engine.ts';

/** How to build a deskhub image that is missing: the images under deploy/images are never pulled. */
export function buildHint(image: string): string | undefined {
  const targets: Record<string, string> = {
    'deskhub/kasm-test:local': 'kasm-test',
    'deskhub/desktop:local': 'desktop',
    'deskhub/desktop-browser:local': 'desktop --with-browser',
  };
  const target = targets[image];
  return target ? `bash deploy/images/build.sh ${target}` : undefined;
}

export function missingImageMessage(image: string): string {
  const hint = buildHint(image);
  return hint
    ? `image ${image} not present (build it with: ${hint})`
    : `image ${image} not present and its pull policy is never (pull it ahead with: docker pull ${image})`;
}

export async function imagePresent(docker: Docker, image: string): Promise<boolean> {
  try {
    await docker.getImage(image).inspect();
    return true;
  } catch (err) {
    if (engineStatus(err) === 404) return false;
    throw err;
  }
}

interface ProgressMessage {
  id?: string;
  status?: string;
  error?: string;
  errorDetail?: { message?: string };
  progressDetail?: { current?: number; total?: number };
}

/**
 * Pulls an image, reporting overall progress (bytes downloaded over bytes known, across layers)
 * as `pull` events at most once per whole percent. Rejects with a message naming the image.
 */
export async function pullImage(docker: Docker, image: string, onEvent?: (event: RuntimeEvent) => void): Promise<void> {
  onEvent?.({ kind: 'pull', message: `pulling ${image}`, progress: 0 });
  let stream: NodeJS.ReadableStream;
  try {
    stream = await docker.pull(image);
  } catch (err) {
    throw new Error(`image ${image} could not be pulled: ${errorText(err)}`);
  }
  const layers = new Map<string, { current: number; total: number }>();
  let reported = 0;
  await new Promise<void>((resolve, reject) => {
    docker.modem.followProgress(
      stream,
      (err: Error | null, output: ProgressMessage[]) => {
        // Docker reports a failed pull as a message in the stream, not as an HTTP error.
        const failure = err?.message ?? output?.find((m) => m.error)?.error;
        if (failure) reject(new Error(`image ${image} could not be pulled: ${failure}`));
        else resolve();
      },
      (message: ProgressMessage) => {
        if (!message.id || !onEvent) return;
        const detail = message.progressDetail;
        if (message.status === 'Downloading' && detail?.total) {
          layers.set(message.id, { current: detail.current ?? 0, total: detail.total });
        } else if (message.status === 'Download complete' || message.status === 'Already exists' || message.status === 'Pull complete') {
          const layer = layers.get(message.id);
          if (layer) layer.current = layer.total;
        }
        let current = 0;
        let total = 0;
        for (const layer of layers.values()) {
          current += layer.current;
          total += layer.total;
        }
        const percent = total > 0 ? Math.floor((current / total) * 100) : 0;
        if (percent > reported && percent < 100) {
          reported = percent;
          onEvent({ kind: 'pull', message: `pulling ${image}: ${percent}%`, progress: percent });
        }
      },
    );
  });
  onEvent?.({ kind: 'pull', message: `pulled ${image}`, progress: 100 });
}

/** Makes sure the type's image is present, honouring its pull policy (default if-missing). */
export async function ensureImage(docker: Docker, type: CatalogEntry, onEvent?: (event: RuntimeEvent) => void): Promise<string> {
  const image = type.image;
  if (!image) throw new Error(`desktop type ${type.id} has no image`);
  const policy = type.pullPolicy ?? 'if-missing';
  if (policy === 'always') {
    await pullImage(docker, image, onEvent);
    return image;
  }
  if (await imagePresent(docker, image)) return image;
  if (policy === 'never') throw new Error(missingImageMessage(image));
  await pullImage(docker, image, onEvent);
  return image;
}

/**
 * The image as a reference no registry can change, for engines other than the one that holds it
 * (the nodes of a swarm): `name@sha256:…` when the image came from a registry (a node that lacks
 * it pulls exactly that), else its image ID (a node that lacks it fails the task, naming the
 * image; it never pulls a same-named image instead). Docker's swarm executor skips its pull for
 * both (moby daemon/cluster/executor/container/adapter.go, pullImage: an image ID is never
 * pulled, a canonical reference only when absent), whatever DOCKER_SERVICE_PREFER_OFFLINE_IMAGE says.
 */
export async function pinnedImage(docker: Docker, image: string): Promise<string> {
  const inspected = (await docker.getImage(image).inspect()) as { Id: string; RepoDigests?: string[] };
  const repository = image.replace(/@.*$/, '').replace(/:[^/:]+$/, '');
  const same = (digest: string) => {
    const name = digest.split('@')[0]!;
    // The engine writes docker.io/library/x as x and docker.io/owner/x as owner/x.
    return name === repository || `docker.io/${name}` === repository || `docker.io/library/${name}` === repository;
  };
  return inspected.RepoDigests?.find(same) ?? inspected.Id;
}
