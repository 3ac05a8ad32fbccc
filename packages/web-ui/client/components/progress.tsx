/**
 * Live progress of a desktop that is being created or started: the control plane's event stream
 * (server-sent events) supplies the steps and the pull percentage, and a slow poll of the desktop
 * itself supplies the state, so a lost or missing stream only costs detail, never the outcome.
 */
import { useEffect, useState } from 'preact/hooks';
import { api, openEventStream, type Desktop, type DesktopEvent, type DesktopState } from '../api.ts';
import { claimMessage, latestRun } from '../pool.ts';

export type Stage = 'prepare' | 'pull' | 'start' | 'wait' | 'ready' | 'failed' | 'stopped';

export interface Progress {
  stage: Stage;
  /** Image pull percentage, when the runtime reports one. */
  percent: number | null;
  /** Whether an image pull happened: the pull step is only shown when it did (process desktops and present images have none). */
  pulled: boolean;
  /** On failure: the step that was in progress, so the panel can show where it stopped. */
  failedAt: Stage | null;
  /** The latest human-readable step from the control plane. */
  message: string;
  state: DesktopState;
  reason: string | null;
  /** false when the event stream could not be opened and only the state poll is running. */
  streaming: boolean;
  /** The claim event's text when this run took a ready desktop from the warm pool, else null. */
  claimed: string | null;
}

const STAGE_OF_KIND: Record<string, Stage> = {
  pull: 'pull',
  create: 'start',
  start: 'start',
  starting: 'start',
  probe: 'wait',
  readiness: 'wait',
  wait: 'wait',
  route: 'wait',
  publish: 'wait',
  ready: 'ready',
  error: 'failed',
  failed: 'failed',
};

export const STAGES: { stage: Stage; label: string }[] = [
  { stage: 'pull', label: 'Pulling image' },
  { stage: 'start', label: 'Starting' },
  { stage: 'wait', label: 'Waiting for the desktop to answer' },
  { stage: 'ready', label: 'Ready' },
];

const POLL_MS = 2500;
/** How long events are gathered before they are applied (a replayed history arrives within it). */
const BATCH_MS = 30;
/** Bounded like every loop: a desktop that never settles stops being polled after this long (the list still refreshes). */
const GIVE_UP_MS = 30 * 60 * 1000;

function stageOfState(state: DesktopState, current: Stage): Stage {
  switch (state) {
    case 'running':
      return 'ready';
    case 'failed':
      return 'failed';
    case 'stopped':
    case 'stopping':
      return 'stopped';
    default:
      // creating/starting: keep the finer stage the events gave us.
      return current === 'ready' || current === 'failed' || current === 'stopped' ? 'start' : current;
  }
}

/** A state learnt from the desktop record (not from an event). */
function follow(p: Progress, d: Desktop): Progress {
  const stage = stageOfState(d.state, p.stage);
  return {
    ...p,
    state: d.state,
    stage,
    reason: d.reason ?? p.reason,
    failedAt: stage === 'failed' && p.stage !== 'failed' ? p.stage : p.failedAt,
  };
}

export function isSettled(state: DesktopState): boolean {
  return state === 'running' || state === 'failed' || state === 'stopped';
}

export function useProgress(desktop: Desktop, onSettled: (d: Desktop) => void): Progress {
  const [progress, setProgress] = useState<Progress>(() => ({
    stage: desktop.state === 'creating' ? 'prepare' : stageOfState(desktop.state, 'start'),
    percent: null,
    pulled: false,
    failedAt: null,
    message: desktop.state === 'creating' ? 'Preparing' : 'Starting',
    state: desktop.state,
    reason: desktop.reason ?? null,
    streaming: true,
    claimed: null,
  }));

  // The list's own refresh may learn the state first: follow it, keeping the finer stage from events.
  useEffect(() => {
    setProgress((p) => (p.state === desktop.state ? p : follow(p, desktop)));
  }, [desktop.state, desktop.reason]);

  useEffect(() => {
    let done = false;
    const started = Date.now();
    let source: EventSource | null = null;
    let timer: ReturnType<typeof setTimeout> | undefined;

    const finish = (d: Desktop) => {
      if (done) return;
      done = true;
      source?.close();
      clearTimeout(timer);
      onSettled(d);
    };

    const apply = (ev: DesktopEvent) => {
      setProgress((prev) => {
        // A create or start begins a new run: what an earlier run reported (a replayed history) no longer applies.
        const p =
          ev.state === 'creating' || ev.state === 'starting' ? { ...prev, pulled: false, percent: null, failedAt: null, reason: null, claimed: claimMessage(ev) } : prev;
        let stage = STAGE_OF_KIND[ev.kind] ?? p.stage;
        let state = p.state;
        if (ev.state) {
          state = ev.state;
          stage = stageOfState(ev.state, stage);
        }
        return {
          ...p,
          stage,
          state,
          percent: typeof ev.progress === 'number' ? Math.max(0, Math.min(100, Math.round(ev.progress))) : p.percent,
          pulled: p.pulled || ev.kind === 'pull',
          failedAt: stage === 'failed' && p.stage !== 'failed' ? p.stage : p.failedAt,
          message: ev.message || p.message,
          reason: state === 'failed' ? ev.message || p.reason : p.reason,
        };
      });
    };

    // Events are applied in small batches: what arrives together (the history replayed on connect)
    // counts from its latest run on, so a previous run's Ready — a restarted desktop's, or a warm
    // pool member's own start before its claim — never flashes by and the steps only move forward.
    let batch: DesktopEvent[] = [];
    let batchTimer: ReturnType<typeof setTimeout> | undefined;
    const flush = () => {
      batchTimer = undefined;
      const events = latestRun(batch);
      batch = [];
      if (done) return;
      events.forEach(apply);
      // A settling event is confirmed by the record right away, so the list updates without waiting a tick.
      if (events.some((ev) => ev.state && isSettled(ev.state))) {
        clearTimeout(timer);
        timer = setTimeout(poll, 0);
      }
    };

    if (typeof EventSource !== 'undefined') {
      source = openEventStream(desktop.id);
      source.onmessage = (msg) => {
        try {
          batch.push(JSON.parse(msg.data) as DesktopEvent);
          batchTimer ??= setTimeout(flush, BATCH_MS);
        } catch {
          // A malformed event is skipped: the state poll still carries the outcome.
        }
      };
      source.onerror = () => {
        // CLOSED means the browser will not retry (404, wrong content type): fall back to the poll alone.
        if (source && source.readyState === EventSource.CLOSED) setProgress((p) => ({ ...p, streaming: false }));
      };
    }

    const poll = async () => {
      if (done) return;
      try {
        const d = await api.desktop(desktop.id);
        setProgress((p) => follow(p, d));
        if (isSettled(d.state)) {
          finish(d);
          return;
        }
      } catch {
        // Transient errors are retried on the next tick; a deleted desktop is the list's business.
      }
      if (!done && Date.now() - started < GIVE_UP_MS) timer = setTimeout(poll, POLL_MS);
    };
    timer = setTimeout(poll, POLL_MS);

    return () => {
      done = true;
      source?.close();
      clearTimeout(timer);
      clearTimeout(batchTimer);
    };
    // One stream per desktop id; onSettled is read through the closure at settle time.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [desktop.id]);

  return progress;
}

export function ProgressPanel({ progress, label }: { progress: Progress; label: string }) {
  const stages = STAGES.filter((s) => s.stage !== 'pull' || progress.pulled || progress.stage === 'pull').map((s) =>
    // A claimed desktop was started before the launch: its "Starting" was taking it from the pool.
    s.stage === 'start' && progress.claimed ? { ...s, label: 'Taken from the warm pool' } : s,
  );
  const failed = progress.stage === 'failed';
  const current = stages.findIndex((s) => s.stage === (failed ? progress.failedAt : progress.stage));
  const percentText = progress.percent !== null ? `${progress.percent}%` : '';
  return (
    <div class="progress" aria-label={`Progress of ${label}`} role="group">
      <ol class="steps">
        {stages.map((s, i) => {
          const status = current < 0 ? 'todo' : i < current ? 'done' : i === current ? (failed ? 'failed' : 'current') : 'todo';
          return (
            <li key={s.stage} class={`step step-${status}`} data-stage={s.stage} aria-current={status === 'current' ? 'step' : undefined}>
              <span class="step-mark" aria-hidden="true">
                {status === 'done' ? '✓' : status === 'current' ? '•' : status === 'failed' ? '✗' : ''}
              </span>
              {s.label}
              {s.stage === 'pull' && progress.percent !== null && status !== 'todo' ? ` ${percentText}` : ''}
              <span class="visually-hidden">{status === 'done' ? ' (done)' : status === 'current' ? ' (in progress)' : status === 'failed' ? ' (failed)' : ''}</span>
            </li>
          );
        })}
      </ol>
      {progress.stage === 'pull' && progress.percent !== null ? (
        <progress max={100} value={progress.percent} aria-label={`Image pull for ${label}`}>
          {percentText}
        </progress>
      ) : progress.stage !== 'ready' && progress.stage !== 'failed' ? (
        <progress aria-label={`Progress of ${label}`} />
      ) : null}
      {progress.claimed ? (
        <p class="progress-note" data-claimed="true">
          {progress.claimed}
        </p>
      ) : null}
      <p class="progress-message" role="status" aria-live="polite">
        {progress.stage === 'ready' ? (progress.claimed ? 'Your desktop is ready: it was already started, waiting in the warm pool.' : 'Your desktop is ready.') : failed
            ? "It did not become ready (the reason is shown above)."
            : progress.claimed && progress.message === progress.claimed
              ? 'Taken from the warm pool, already started; publishing its address.'
              : progress.message}
        {!progress.streaming ? ' (live details unavailable; following the state)' : ''}
      </p>
    </div>
  );
}
