/**
 * The runtime contract (src/runtime/types.ts), written once and run against every runtime
 * (process-runtime.test.ts, docker-runtime.test.ts), so the lifecycle can treat them alike: a
 * new runtime lands by passing it. What only one runtime does stays in that runtime's file.
 */
import type { Test } from 'tap';
import type { DesktopRuntime, DesktopSpec, RuntimeEvent, RuntimeInstance, RuntimeStatus } from '../src/runtime/types.ts';
import { waitFor } from './helpers.ts';

export interface RuntimeHarness {
  /** The runtime under test; the harness closes it and removes what it ran. */
  runtime: DesktopRuntime;
  /** Another instance over the same bookkeeping (data dir, instance label), as after a restart. */
  freshRuntime(): DesktopRuntime;
  /** Resolves once the runtime's watch() would see the next exit (Docker opens an event stream). */
  watching(runtime: DesktopRuntime): Promise<void>;
  /** A desktop that starts and answers. */
  desktop(): DesktopSpec;
  /** Whether the desktop answers at this upstream now (one try, no waiting). */
  answers(instance: RuntimeInstance, spec: DesktopSpec): Promise<boolean>;
  /** The event kinds create() reports for the desktop above, in order. */
  createEvents: RuntimeEvent['kind'][];
  /** inspect()'s reason for a desktop deskhub stopped. */
  stoppedReason: RegExp;
  /** A desktop that exits at once: the reason watchers get, and what its output says. */
  crashing: { spec(): DesktopSpec; reason: RegExp; output: RegExp };
  /** Ends a desktop behind the runtime's back (kill -9, docker kill). */
  kill(runtimeId: string): Promise<void>;
  /** The reason watchers get for a killed desktop: from the runtime that started it, and from a fresh one that adopted it. */
  killedReason: RegExp;
  adoptedKilledReason: RegExp;
  /**
   * A desktop whose image or command is missing, the error create() throws, and availableFor()'s
   * reason; null where the runtime cannot tell ahead (a swarm's images live on each node): then
   * availableFor() says ok and create() alone fails.
   */
  missing: { spec(): DesktopSpec; message: string | RegExp; reason: string | RegExp | null };
  /** A desktop whose port is already held by someone else, and what its output says. */
  portTaken(): Promise<{ spec: DesktopSpec; output: RegExp; release(): Promise<void> }>;
  /** A runtime whose engine is gone (Docker Engine not answering, the records folder unusable), and what it says. */
  engineGone(): { runtime: DesktopRuntime; reason: RegExp };
  /** What this test file's desktops still hold outside the runtime's own view (processes, containers): must not grow. */
  leftovers(): Promise<string[]>;
}

/** A failure must come as an error within this long, never as a hang. */
const FAILS_WITHIN_MS = 30_000;

async function within<T>(what: string, promise: Promise<T>, ms = FAILS_WITHIN_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms (hung)`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Collects what watch() reports, and waits for a report matching a test. */
function watchRecorder(runtime: DesktopRuntime): { seen: RuntimeStatus[]; next(what: string, match: (s: RuntimeStatus) => boolean): Promise<RuntimeStatus>; stop(): void } {
  const seen: RuntimeStatus[] = [];
  const stop = runtime.watch((status) => seen.push(status));
  return {
    seen,
    next: (what, match) => waitFor(what, () => seen.find(match), 30_000, 50),
    stop,
  };
}

export function runtimeContractSuite(tap: Test, name: string, make: () => Promise<RuntimeHarness>): void {
  tap.test(`${name} runtime: the runtime contract`, async (tap) => {
    const h = await make();
    const { runtime } = h;
    const idsOf = async (r: DesktopRuntime) => (await r.list()).map((s) => s.runtimeId).sort();
    const answersSoon = (instance: RuntimeInstance, spec: DesktopSpec) =>
      waitFor('the desktop to answer', async () => ((await h.answers(instance, spec).catch(() => false)) ? true : undefined), 60_000, 200);
    const fresh: DesktopRuntime[] = [];
    const freshRuntime = () => {
      const r = h.freshRuntime();
      fresh.push(r);
      return r;
    };
    tap.teardown(async () => {
      for (const r of fresh) await r.close();
    });
    /** Nothing this test created is left: neither in the runtime's list nor outside it. */
    const nothingLeft = async (t: Test, before: { ids: string[]; outside: string[] }, what: string) => {
      t.same(await idsOf(runtime), before.ids, `${what}: the runtime lists nothing new`);
      t.same((await h.leftovers()).sort(), before.outside, `${what}: nothing left running or stored`);
    };
    const snapshot = async () => ({ ids: await idsOf(runtime), outside: (await h.leftovers()).sort() });

    tap.test('create, inspect, list', async (t) => {
      const spec = h.desktop();
      t.same(await runtime.available(), { ok: true });
      t.same(await runtime.availableFor(spec.type), { ok: true });
      const events: RuntimeEvent[] = [];
      const instance = await runtime.create(spec, (e) => events.push(e));
      t.same(events.map((e) => e.kind), h.createEvents, 'create reports its steps');
      await answersSoon(instance, spec);
      t.pass('the desktop answers at the upstream create returned');
      t.same(await runtime.inspect(instance.runtimeId), { runtimeId: instance.runtimeId, desktopId: spec.desktopId, running: true, upstream: instance.upstream });
      const listed = (await runtime.list()).find((s) => s.runtimeId === instance.runtimeId);
      t.match(listed, { desktopId: spec.desktopId, running: true, upstream: instance.upstream }, 'list() has it, with the same upstream');
      await runtime.remove(instance.runtimeId);
    });

    tap.test('stop, start', async (t) => {
      const spec = h.desktop();
      const instance = await runtime.create(spec);
      await answersSoon(instance, spec);
      await runtime.stop(instance.runtimeId);
      const stopped = await runtime.inspect(instance.runtimeId);
      t.match(stopped, { runtimeId: instance.runtimeId, desktopId: spec.desktopId, running: false });
      t.match(stopped?.reason, h.stoppedReason);
      t.equal(stopped?.upstream, undefined, 'no upstream while stopped');
      t.match((await runtime.list()).find((s) => s.runtimeId === instance.runtimeId), { running: false }, 'listed as not running');
      await runtime.stop(instance.runtimeId);
      t.pass('stopping a stopped desktop is no error');
      const again = await runtime.start(instance.runtimeId);
      t.equal(again.runtimeId, instance.runtimeId, 'the same desktop');
      await answersSoon(again, spec);
      t.pass('answers again after start, at the upstream start returned');
      t.same((await runtime.inspect(instance.runtimeId))?.upstream, again.upstream);
      t.match(again.upstream, { scheme: instance.upstream.scheme, verifyTls: instance.upstream.verifyTls }, 'spoken to as before');
      await runtime.remove(instance.runtimeId);
    });

    tap.test('remove', async (t) => {
      const before = await snapshot();
      const instance = await runtime.create(h.desktop());
      await runtime.remove(instance.runtimeId);
      t.equal(await runtime.inspect(instance.runtimeId), null, 'gone');
      await runtime.remove(instance.runtimeId);
      t.pass('removing twice is no error');
      t.equal(await runtime.logs(instance.runtimeId, 10), '', 'no logs for a removed desktop');
      await nothingLeft(t, before, 'after remove');
    });

    tap.test('watch and logs: a desktop that exits by itself is reported with its reason; its last lines stay readable', async (t) => {
      const watch = watchRecorder(runtime);
      t.teardown(watch.stop);
      await h.watching(runtime);
      const crashing = h.crashing;
      const created = await within('create of a crashing desktop', runtime.create(crashing.spec())).catch((err: Error) => err);
      if (created instanceof Error) {
        // It may die before its address is read back: then create() itself fails with the output.
        t.match(created.message, crashing.output, 'create says why, with the output');
        return;
      }
      t.teardown(() => runtime.remove(created.runtimeId));
      const exited = await watch.next('the exit to be reported', (s) => s.runtimeId === created.runtimeId);
      t.match(exited, { running: false, reason: crashing.reason });
      t.match(await runtime.inspect(created.runtimeId), { running: false, reason: crashing.reason }, 'inspect says the same');
      t.match(await runtime.logs(created.runtimeId, 5), crashing.output);
    });

    tap.test("watch: a desktop killed behind the runtime's back is reported; deskhub's own stop is not", async (t) => {
      const killedSpec = h.desktop();
      const [killed, stoppedByUs] = await Promise.all([runtime.create(killedSpec), runtime.create(h.desktop())]);
      const watch = watchRecorder(runtime);
      t.teardown(watch.stop);
      await h.watching(runtime);
      await runtime.stop(stoppedByUs.runtimeId);
      await h.kill(killed.runtimeId);
      const died = await watch.next('the kill to be reported', (s) => s.runtimeId === killed.runtimeId);
      t.match(died, { running: false, reason: h.killedReason });
      t.equal(died.desktopId, killedSpec.desktopId, 'the report names the desktop');
      t.notOk(
        watch.seen.some((s) => s.runtimeId === stoppedByUs.runtimeId),
        "a stop by deskhub is not reported (it came before the kill, whose report has arrived)",
      );
      await Promise.all([killed, stoppedByUs].map((i) => runtime.remove(i.runtimeId)));
    });

    tap.test('adoption: a fresh instance finds running desktops, stops, starts and removes them, and notices when one dies', async (t) => {
      const [specA, specB] = [h.desktop(), h.desktop()];
      const a = await runtime.create(specA);
      const b = await runtime.create(specB);
      const second = freshRuntime();
      t.same(await second.inspect(a.runtimeId), { runtimeId: a.runtimeId, desktopId: specA.desktopId, running: true, upstream: a.upstream }, 'adopted, same upstream');
      const listed = (await second.list()).map((s) => s.runtimeId);
      t.ok(listed.includes(a.runtimeId) && listed.includes(b.runtimeId), 'the fresh instance lists both');

      await second.stop(b.runtimeId);
      t.match(await second.inspect(b.runtimeId), { running: false }, 'an adopted desktop can be stopped');
      const restarted = await second.start(b.runtimeId);
      await answersSoon(restarted, specB);
      t.pass('and started again');

      const watch = watchRecorder(second);
      t.teardown(watch.stop);
      await h.watching(second);
      await h.kill(a.runtimeId);
      const died = await watch.next('the adopted desktop death to be noticed', (s) => s.runtimeId === a.runtimeId);
      t.match(died, { running: false, reason: h.adoptedKilledReason });

      for (const id of [a.runtimeId, b.runtimeId]) {
        await second.remove(id);
        t.equal(await second.inspect(id), null, 'removed by the fresh instance');
        await runtime.remove(id);
      }
    });

    tap.test('clean failure: a missing image or command is an error naming it, and leaves nothing', async (t) => {
      const before = await snapshot();
      const spec = h.missing.spec();
      if (h.missing.reason === null) t.same(await runtime.availableFor(spec.type), { ok: true }, 'availableFor cannot tell ahead');
      else t.match(await runtime.availableFor(spec.type), { ok: false, reason: h.missing.reason }, 'availableFor names what is missing');
      await t.rejects(within('create with a missing image or command', runtime.create(spec)), { message: h.missing.message });
      await nothingLeft(t, before, 'after the failed create');
      const next = await runtime.create(h.desktop());
      t.ok(next.runtimeId, 'the runtime still creates desktops afterwards');
      await runtime.remove(next.runtimeId);
    });

    tap.test('clean failure: a desktop whose port is taken ends and says why, and leaves nothing', async (t) => {
      const before = await snapshot();
      const taken = await h.portTaken();
      t.teardown(taken.release);
      const created = await within('create with the port taken', runtime.create(taken.spec)).catch((err: Error) => err);
      if (created instanceof Error) {
        t.match(created.message, taken.output, 'create says why, with the output');
      } else {
        const ended = await waitFor('the desktop to end', async () => {
          const status = await runtime.inspect(created.runtimeId);
          return status && !status.running ? status : undefined;
        });
        t.ok(ended.reason, `inspect gives a reason (${ended.reason})`);
        t.match(await runtime.logs(created.runtimeId, 20), taken.output, 'the output says the port is taken');
        await runtime.remove(created.runtimeId);
      }
      await nothingLeft(t, before, 'after the failed desktop is removed');
    });

    tap.test('homes: made on first use, kept after the desktop is removed, removed only when nothing mounts them', async (t) => {
      const before = await snapshot();
      const homeId = crypto.randomUUID();
      const spec: DesktopSpec = { ...h.desktop(), home: { id: homeId, path: '/home/kasm-user' } };
      const first = await within('create with a home', runtime.create(spec));
      await waitFor('the desktop with a home to answer', () => h.answers(first, spec).then((ok) => ok || undefined));
      t.ok((await runtime.listHomes()).some((home) => home.homeId === homeId), 'the home is listed');
      await t.rejects(runtime.removeHome(homeId), /in use/, 'a home a desktop mounts is not removed');
      await runtime.remove(first.runtimeId);
      t.ok((await runtime.listHomes()).some((home) => home.homeId === homeId), 'removing the desktop keeps its home');
      const second = await within('create again on the same home', runtime.create({ ...h.desktop(), home: spec.home! }));
      await runtime.remove(second.runtimeId);
      await runtime.removeHome(homeId);
      t.notOk((await runtime.listHomes()).some((home) => home.homeId === homeId), 'removed once nothing mounts it');
      await runtime.removeHome(homeId);
      t.pass('removing a missing home is not an error');
      await nothingLeft(t, before, 'after the desktops are removed');
    });

    tap.test('clean failure: with the engine gone, the runtime says so, and create fails at once naming it', async (t) => {
      const before = await snapshot();
      const gone = h.engineGone();
      t.teardown(() => gone.runtime.close());
      const availability = await within('available() with the engine gone', gone.runtime.available());
      t.equal(availability.ok, false, 'not available');
      if (!availability.ok) t.match(availability.reason, gone.reason);
      await t.rejects(within('create with the engine gone', gone.runtime.create(h.desktop())), { message: gone.reason });
      await t.rejects(within('list with the engine gone', gone.runtime.list()), { message: gone.reason });
      await nothingLeft(t, before, 'after the failed create');
    });
  });
}
