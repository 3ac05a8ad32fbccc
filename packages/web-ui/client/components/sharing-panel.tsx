/**
 * Sharing a desktop, for its owner: the shares and links it has (who, mode, end, visitors) with
 * Revoke, "Share with a user", "Create a link" (its URL shown once, with Copy), and who has it open
 * now; when it cannot be shared here, why. It sits in a modal <dialog> (focus kept inside, Escape
 * closes, the page behind inert), opened from the desktop view's bar or the desktop's card.
 *
 * `useSharing` reads GET /api/desktops/:id/shares while `active`, every few seconds while the tab
 * is visible: the same answer feeds the panel and the banner over the open desktop
 * (`ConnectedBanner`: "bob is watching · carol has control").
 */
import { useCallback, useEffect, useRef, useState } from 'preact/hooks';
import { api, type Desktop, type Share, type ShareMode, type SharingView } from '../api.ts';
import { connectedSummary, durationParam, linkExpiryChoices, MODE_LABEL, shareExpiryChoices, shareWho, type ExpiryChoice } from '../sharing.ts';
import { useModal } from './confirm.tsx';
import { ShownOnce } from './shown-once.tsx';
import { ago, exact } from './time.ts';

/** How often who is connected is asked while a desktop is open (one small read; the server keeps presence for 15 s). */
export const SHARING_POLL_MS = 4000;

export interface SharingState {
  view: SharingView | null;
  error: string | null;
  reload: () => Promise<void>;
}

/** An error said at once (role alert), or nothing. */
function Alert({ text }: { text: string | null }) {
  return text ? (
    <p class="error" role="alert">
      {text}
    </p>
  ) : null;
}

/** When a share or link ends, as a select. */
function ExpirySelect({ id, value, choices, onChange }: { id: string; value: string; choices: ExpiryChoice[]; onChange: (v: string) => void }) {
  return (
    <>
      <label for={id}>Ends</label>
      <select id={id} value={value} onChange={(e) => onChange((e.target as HTMLSelectElement).value)}>
        {choices.map((c) => (
          <option key={c.value} value={c.value}>
            {c.value ? `In ${c.label}` : c.label}
          </option>
        ))}
      </select>
    </>
  );
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export function useSharing(id: string, active: boolean): SharingState {
  const [view, setView] = useState<SharingView | null>(null);
  const [error, setError] = useState<string | null>(null);
  const alive = useRef(true);
  const latest = useRef<SharingView | null>(null);

  const reload = useCallback(async () => {
    try {
      const v = await api.sharing(id);
      if (!alive.current) return;
      latest.current = v;
      setView(v);
      setError(null);
    } catch (err) {
      if (alive.current) setError(message(err));
    }
  }, [id]);

  useEffect(() => {
    alive.current = true;
    return () => {
      alive.current = false;
    };
  }, [id]);

  useEffect(() => {
    if (!active) return;
    void reload();
    // A desktop that cannot be shared here has nobody else on it: asked again only when the tab comes back.
    const timer = setInterval(() => document.visibilityState === 'visible' && latest.current?.available !== false && void reload(), SHARING_POLL_MS);
    const onVisible = () => document.visibilityState === 'visible' && void reload();
    document.addEventListener('visibilitychange', onVisible);
    return () => {
      clearInterval(timer);
      document.removeEventListener('visibilitychange', onVisible);
    };
  }, [active, reload]);

  return { view, error, reload };
}

/** Over the open desktop, while others have it open: who, and as what. Says nothing when nobody else is there. */
export function ConnectedBanner({ view }: { view: SharingView | null }) {
  const text = view ? connectedSummary(view.connected) : '';
  return (
    <div class="share-banner-live" role="status" aria-live="polite">
      {text ? (
        <p class="share-banner" id="connected-banner">
          {text}
        </p>
      ) : null}
    </div>
  );
}

function endText(expiresAt: string | null): string {
  return expiresAt ? `Ends ${ago(expiresAt)}` : 'Until revoked';
}

function ShareRow({ share, onRevoke }: { share: Share; onRevoke: (s: Share) => Promise<void> }) {
  const [busy, setBusy] = useState(false);
  const who = shareWho(share);
  const name = share.kind === 'user' ? `${share.username}'s share` : 'this link';
  return (
    <li class="share-row" data-share-id={share.id} data-share-kind={share.kind}>
      <div class="share-who">
        <strong>{who}</strong>
        <span class={`badge ${share.mode === 'control' ? 'badge-starting' : ''}`} data-mode={share.mode}>
          {MODE_LABEL[share.mode]}
        </span>
      </div>
      <span class="muted" title={exact(share.expiresAt)}>
        {endText(share.expiresAt)}
      </span>
      <button
        type="button"
        class="danger"
        disabled={busy}
        onClick={async () => {
          setBusy(true);
          try {
            await onRevoke(share);
          } finally {
            setBusy(false);
          }
        }}
      >
        {busy ? 'Revoking…' : 'Revoke'}
        <span class="visually-hidden"> {name}</span>
      </button>
    </li>
  );
}

function ModeChoice({
  name,
  mode,
  setMode,
  viewDisabled,
  controlDisabled,
  viewWhyNot,
  controlWhyNot,
}: {
  name: string;
  mode: ShareMode;
  setMode: (m: ShareMode) => void;
  viewDisabled: boolean;
  controlDisabled: boolean;
  viewWhyNot: string;
  controlWhyNot: string;
}) {
  return (
    <fieldset class="mode-choice">
      <legend>Access</legend>
      <label class="check">
        <input type="radio" name={name} value="view" checked={mode === 'view'} disabled={viewDisabled} onChange={() => setMode('view')} aria-describedby={`${name}-view-hint`} />
        <span>View only</span>
        <span class="hint" id={`${name}-view-hint`}>
          {viewDisabled ? viewWhyNot : 'They see the desktop; their keys and mouse do nothing.'}
        </span>
      </label>
      <label class="check">
        <input
          type="radio"
          name={name}
          value="control"
          checked={mode === 'control'}
          disabled={controlDisabled}
          onChange={() => setMode('control')}
          aria-describedby={`${name}-control-hint`}
        />
        <span>Control</span>
        <span class="hint" id={`${name}-control-hint`}>
          {controlDisabled ? controlWhyNot : 'They type and use the mouse too (never your files and settings paths).'}
        </span>
      </label>
    </fieldset>
  );
}

const NO_VIEWER = "This desktop's type has no read-only user, so it can only be shared for control.";

function ShareWithUser({ desktop, view, onShared }: { desktop: Desktop; view: SharingView; onShared: (text: string) => Promise<void> }) {
  const [username, setUsername] = useState('');
  const [mode, setMode] = useState<ShareMode>(view.viewAllowed ? 'view' : 'control');
  const [expiresIn, setExpiresIn] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const choices = shareExpiryChoices();
  return (
    <form
      class="stack share-form"
      aria-labelledby="share-user-title"
      onSubmit={async (e) => {
        e.preventDefault();
        const who = username.trim();
        if (!who || busy) return;
        setBusy(true);
        setError(null);
        try {
          await api.shareWith(desktop.id, { username: who, mode, ...(expiresIn ? { expiresIn } : {}) });
          setUsername('');
          await onShared(`Shared with ${who} (${MODE_LABEL[mode].toLowerCase()}).`);
        } catch (err) {
          setError(message(err));
        } finally {
          setBusy(false);
        }
      }}
    >
      <h3 id="share-user-title">Share with a user</h3>
      <label for="share-username">Username</label>
      <input
        id="share-username"
        value={username}
        onInput={(e) => setUsername((e.target as HTMLInputElement).value)}
        required
        maxLength={64}
        autocomplete="off"
        spellcheck={false}
        aria-describedby="share-username-hint"
      />
      <span class="hint" id="share-username-hint">
        They must have signed in to deskhub once. They find it under “Shared with me”.
      </span>
      <ModeChoice
        name="share-mode"
        mode={mode}
        setMode={setMode}
        viewDisabled={!view.viewAllowed}
        controlDisabled={false}
        viewWhyNot={NO_VIEWER}
        controlWhyNot=""
      />
      <ExpirySelect id="share-expiry" value={expiresIn} choices={choices} onChange={setExpiresIn} />
      <button type="submit" class="primary" disabled={busy}>
        {busy ? 'Sharing…' : 'Share'}
      </button>
      <Alert text={error} />
    </form>
  );
}

function CreateLink({ desktop, view, onCreated }: { desktop: Desktop; view: SharingView; onCreated: (text: string) => Promise<void> }) {
  const linkModes = { view: view.viewAllowed, control: view.linkControl };
  const [mode, setMode] = useState<ShareMode>(linkModes.view ? 'view' : 'control');
  const choices = linkExpiryChoices(view.linkDefaultSeconds, view.linkMaxSeconds);
  const [expiresIn, setExpiresIn] = useState(choices.find((c) => c.value === durationParam(view.linkDefaultSeconds))?.value ?? choices[0]?.value ?? '');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [made, setMade] = useState<{ url: string; mode: ShareMode } | null>(null);

  if (!linkModes.view && !linkModes.control) {
    return (
      <section class="stack" aria-labelledby="share-link-title">
        <h3 id="share-link-title">Share link</h3>
        <p class="note">
          {NO_VIEWER} Links give view only here (an admin allows control through links with <code>SHARE_LINK_CONTROL</code>), so this desktop
          cannot have a link.
        </p>
      </section>
    );
  }

  if (made) {
    return (
      <ShownOnce id="share-link-made" class="share-link-made" title="Copy the link now" what="link" value={made.url} onDone={() => setMade(null)}>
        <p>
          It is shown only this once. Anyone signed in to deskhub who opens it gets {MODE_LABEL[made.mode].toLowerCase()} access until it ends or you
          revoke it.
        </p>
      </ShownOnce>
    );
  }

  return (
    <form
      class="stack share-form"
      aria-labelledby="share-link-title"
      onSubmit={async (e) => {
        e.preventDefault();
        if (busy) return;
        setBusy(true);
        setError(null);
        try {
          const created = await api.createLink(desktop.id, { mode, ...(expiresIn ? { expiresIn } : {}) });
          setMade({ url: created.url, mode });
          await onCreated('Share link created.');
        } catch (err) {
          setError(message(err));
        } finally {
          setBusy(false);
        }
      }}
    >
      <h3 id="share-link-title">Share link</h3>
      <p class="hint">Anyone signed in to deskhub who opens the link can reach this desktop until the link ends.</p>
      <ModeChoice
        name="link-mode"
        mode={mode}
        setMode={setMode}
        viewDisabled={!linkModes.view}
        controlDisabled={!linkModes.control}
        viewWhyNot={NO_VIEWER}
        controlWhyNot="Links give view only here (an admin allows control through links with SHARE_LINK_CONTROL)."
      />
      <ExpirySelect id="link-expiry" value={expiresIn} choices={choices} onChange={setExpiresIn} />
      <button type="submit" class="primary" disabled={busy}>
        {busy ? 'Creating…' : 'Create link'}
      </button>
      <Alert text={error} />
    </form>
  );
}

function ConnectedList({ view }: { view: SharingView }) {
  return (
    <section aria-labelledby="connected-title">
      <h3 id="connected-title">Connected now</h3>
      {view.connected.length === 0 ? (
        <p class="muted">Nobody has it open.</p>
      ) : (
        <ul class="plain-list" id="connected-now">
          {view.connected.map((c) => (
            <li key={`${c.username} ${c.role}`}>
              <strong>{c.username}</strong> — {c.role === 'owner' ? 'owner' : c.role === 'control' ? 'has control' : 'watching'}
              <span class="muted" title={exact(c.lastSeenAt)}>
                {' '}
                · seen {ago(c.lastSeenAt)}
              </span>
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}

/** The sharing panel in a modal dialog; `open` shows it, closing (Escape, Close) calls onClose. */
export function SharingDialog({ desktop, label, open, sharing, onClose }: { desktop: Desktop; label: string; open: boolean; sharing: SharingState; onClose: () => void }) {
  const ref = useModal(open);
  const [announcement, setAnnouncement] = useState('');
  const { view, error, reload } = sharing;

  const done = async (text: string) => {
    setAnnouncement(text);
    await reload();
  };
  const revoke = async (share: Share) => {
    try {
      await api.revokeShare(desktop.id, share.id);
      await done(share.kind === 'user' ? `${share.username}'s share revoked: their connections are closed.` : 'Link revoked: its connections are closed.');
    } catch (err) {
      setAnnouncement(`Could not revoke: ${message(err)}`);
    }
  };

  return (
    <dialog ref={ref} class="sharing" aria-labelledby="sharing-title" onClose={onClose} id="sharing-dialog">
      {open ? (
        <div class="stack">
          <div class="sharing-head">
            <h2 id="sharing-title">Share {label}</h2>
            <button type="button" onClick={() => ref.current?.close()} autofocus>
              Close
            </button>
          </div>
          <p class="visually-hidden" role="status" aria-live="polite">
            {announcement}
          </p>
          {view === null ? (
            error ? (
              <p class="error" role="alert">
                Could not load its sharing: {error}
              </p>
            ) : (
              <p aria-busy="true">Loading…</p>
            )
          ) : !view.available ? (
            <p class="reason" id="sharing-unavailable">
              <strong>It cannot be shared here:</strong> {view.reason ?? 'the control plane did not say why.'}
            </p>
          ) : (
            <>
              <section aria-labelledby="shares-title">
                <h3 id="shares-title">Shared with</h3>
                {view.shares.length === 0 ? (
                  <p class="muted">Nobody yet: only you can reach it.</p>
                ) : (
                  <ul class="plain-list share-list" id="share-list">
                    {view.shares.map((s) => (
                      <ShareRow key={s.id} share={s} onRevoke={revoke} />
                    ))}
                  </ul>
                )}
              </section>
              <ConnectedList view={view} />
              <div class="share-forms">
                <ShareWithUser desktop={desktop} view={view} onShared={done} />
                <CreateLink desktop={desktop} view={view} onCreated={done} />
              </div>
            </>
          )}
        </div>
      ) : null}
    </dialog>
  );
}

/**
 * A Share button that opens the panel. On a desktop's card the panel reads its shares only while
 * open; the desktop view passes the `sharing` it reads anyway (for the banner).
 */
export function ShareButton({ desktop, label, sharing: given }: { desktop: Desktop; label: string; sharing?: SharingState }) {
  const [open, setOpen] = useState(false);
  const own = useSharing(desktop.id, open && given === undefined);
  const sharing = given ?? own;
  const button = useRef<HTMLButtonElement>(null);
  return (
    <>
      <button type="button" ref={button} onClick={() => setOpen(true)} aria-haspopup="dialog">
        Share<span class="visually-hidden"> {label}</span>
      </button>
      <SharingDialog
        desktop={desktop}
        label={label}
        open={open}
        sharing={sharing}
        onClose={() => {
          setOpen(false);
          button.current?.focus();
        }}
      />
    </>
  );
}
