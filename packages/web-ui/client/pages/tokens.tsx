/**
 * API tokens: create one for a script (a name, its scopes, an optional expiry), see its text once
 * with a copy button, list the ones you hold (never their secret), revoke one after confirming.
 * The control plane decides what is allowed (a token cannot do more than its scopes; only admins
 * may grant `admin`); the page offers the admin scope only to admins as a convenience.
 */
import { useCallback, useEffect, useState } from 'preact/hooks';
import { api, type ApiToken, type NewApiToken } from '../api.ts';
import { ConfirmDialog, type ConfirmRequest } from '../components/confirm.tsx';
import { ShownOnce } from '../components/shown-once.tsx';
import { ago, exact } from '../components/time.ts';

const SCOPES: { id: string; label: string; help: string; adminOnly?: boolean }[] = [
  { id: 'desktops:read', label: 'Read desktops', help: 'List your desktops and their events, the catalog, and who you are.' },
  { id: 'desktops:write', label: 'Manage desktops', help: 'Create, start, stop and delete your desktops.' },
  { id: 'admin', label: 'Admin', help: "The admin API: everyone's desktops. Works only while you are an admin.", adminOnly: true },
];

const EXPIRY: { days: number | null; label: string }[] = [
  { days: 30, label: '30 days' },
  { days: 7, label: '7 days' },
  { days: 90, label: '90 days' },
  { days: 365, label: '1 year' },
  { days: null, label: 'Never' },
];

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** The new token, shown once, with a copy button that says whether it worked. */
function CreatedToken({ created, onDone }: { created: NewApiToken; onDone: () => void }) {
  return (
    <ShownOnce id="created-token" titleId="created-title" class="token-created" title={`Copy your new token “${created.name}” now`} what="token" value={created.token} onDone={onDone}>
      <p>It is shown only this once: deskhub keeps only a hash of it. Send it as <code>Authorization: Bearer &lt;token&gt;</code>.</p>
    </ShownOnce>
  );
}

function TokenCard({ token, onRevoke }: { token: ApiToken; onRevoke: (t: ApiToken) => void }) {
  const headingId = `token-${token.id}-title`;
  const expired = token.expiresAt !== null && Date.parse(token.expiresAt) <= Date.now();
  return (
    <li class="card" aria-labelledby={headingId} data-token-id={token.id}>
      <div class="card-head">
        <h3 id={headingId}>{token.name}</h3>
        {expired ? <span class="badge badge-failed">Expired</span> : null}
      </div>
      <dl class="facts">
        <div class="wide">
          <dt>Scopes</dt>
          <dd class="scopes">
            {token.scopes.map((s) => (
              <code key={s}>{s}</code>
            ))}
          </dd>
        </div>
        <div>
          <dt>Created</dt>
          <dd title={exact(token.createdAt)}>{ago(token.createdAt)}</dd>
        </div>
        <div>
          <dt>Expires</dt>
          <dd title={exact(token.expiresAt)}>{token.expiresAt ? ago(token.expiresAt) : 'Never'}</dd>
        </div>
        <div>
          <dt>Last used</dt>
          <dd title={exact(token.lastUsedAt)}>{token.lastUsedAt ? ago(token.lastUsedAt) : 'Never'}</dd>
        </div>
      </dl>
      <div class="actions">
        <button type="button" class="danger" onClick={() => onRevoke(token)}>
          Revoke<span class="visually-hidden"> {token.name}</span>
        </button>
      </div>
    </li>
  );
}

export function Tokens({ admin }: { admin: boolean }) {
  const [tokens, setTokens] = useState<ApiToken[] | null>(null);
  const [loadError, setLoadError] = useState<string | null>(null);
  const [name, setName] = useState('');
  const [scopes, setScopes] = useState<string[]>(['desktops:read']);
  const [expiry, setExpiry] = useState<string>('30');
  const [busy, setBusy] = useState(false);
  const [createError, setCreateError] = useState<string | null>(null);
  const [created, setCreated] = useState<NewApiToken | null>(null);
  const [confirm, setConfirm] = useState<ConfirmRequest | null>(null);
  const [announcement, setAnnouncement] = useState('');

  const refresh = useCallback(async () => {
    try {
      setTokens(await api.tokens());
      setLoadError(null);
    } catch (err) {
      setLoadError(message(err));
    }
  }, []);
  useEffect(() => void refresh(), [refresh]);

  const toggle = (id: string, on: boolean) => setScopes((list) => (on ? [...list.filter((s) => s !== id), id] : list.filter((s) => s !== id)));

  const create = async (e: Event) => {
    e.preventDefault();
    if (busy) return;
    setCreateError(null);
    if (!name.trim()) return setCreateError('Give the token a name, e.g. what will use it.');
    if (scopes.length === 0) return setCreateError('Choose at least one scope.');
    setBusy(true);
    try {
      const days = expiry === 'never' ? undefined : Number(expiry);
      const made = await api.createToken({ name: name.trim(), scopes, ...(days ? { expiresInDays: days } : {}) });
      setCreated(made);
      setName('');
      await refresh();
    } catch (err) {
      setCreateError(message(err));
    } finally {
      setBusy(false);
    }
  };

  const revoke = (token: ApiToken) =>
    setConfirm({
      title: `Revoke the token ${token.name}?`,
      body: 'Scripts using it are refused from now on. This cannot be undone.',
      confirmLabel: 'Revoke token',
      onConfirm: () => {
        api
          .revokeToken(token.id)
          .then(() => {
            setTokens((list) => (list ?? []).filter((x) => x.id !== token.id));
            if (created?.id === token.id) setCreated(null);
            setAnnouncement(`Token ${token.name} revoked.`);
          })
          .catch((err) => setAnnouncement(`Could not revoke ${token.name}: ${message(err)}`));
      },
    });

  return (
    <>
      <h1 tabIndex={-1}>API tokens</h1>
      <p class="visually-hidden" role="status" aria-live="polite">
        {announcement}
      </p>
      <p>
        Scripts use the deskhub API with a token instead of your sign-in: <code>curl -H 'Authorization: Bearer dhk_…' {location.origin}/api/desktops</code>. A
        token can do only what its scopes allow, and cannot create tokens. API documentation:{' '}
        <a href="/api/docs/">/api/docs</a>.
      </p>
      <section aria-labelledby="new-token-title">
        <h2 id="new-token-title">New token</h2>
        <form class="stack token-form" onSubmit={(e) => void create(e)} noValidate>
          <label for="token-name">Name</label>
          <input
            id="token-name"
            value={name}
            maxLength={100}
            autocomplete="off"
            aria-describedby="token-name-hint"
            onInput={(e) => setName((e.target as HTMLInputElement).value)}
          />
          <span id="token-name-hint" class="hint">
            What will use it, e.g. “nightly backup”.
          </span>
          <fieldset>
            <legend>Scopes</legend>
            {SCOPES.filter((s) => admin || !s.adminOnly).map((s) => (
              <div class="check" key={s.id}>
                <input
                  type="checkbox"
                  id={`scope-${s.id}`}
                  checked={scopes.includes(s.id)}
                  aria-describedby={`scope-${s.id}-help`}
                  onChange={(e) => toggle(s.id, (e.target as HTMLInputElement).checked)}
                />
                <label for={`scope-${s.id}`}>
                  {s.label} <code>{s.id}</code>
                </label>
                <span id={`scope-${s.id}-help`} class="hint">
                  {s.help}
                </span>
              </div>
            ))}
          </fieldset>
          <label for="token-expiry">Expires after</label>
          <select id="token-expiry" value={expiry} onChange={(e) => setExpiry((e.target as HTMLSelectElement).value)}>
            {EXPIRY.map((x) => (
              <option key={x.label} value={x.days === null ? 'never' : String(x.days)}>
                {x.label}
              </option>
            ))}
          </select>
          <button type="submit" class="primary" disabled={busy}>
            {busy ? 'Creating…' : 'Create token'}
          </button>
          {createError ? (
            <p class="error" role="alert">
              {createError}
            </p>
          ) : null}
        </form>
        {created ? <CreatedToken created={created} onDone={() => setCreated(null)} /> : null}
      </section>
      <section aria-labelledby="tokens-title">
        <h2 id="tokens-title">Your tokens</h2>
        {loadError ? (
          <p class="error" role="alert">
            Could not load your tokens: {loadError}
          </p>
        ) : null}
        {tokens === null ? (
          <p aria-busy="true">Loading…</p>
        ) : tokens.length === 0 ? (
          <p class="muted">No tokens yet.</p>
        ) : (
          <ul class="cards" id="my-tokens">
            {tokens.map((t) => (
              <TokenCard key={t.id} token={t} onRevoke={revoke} />
            ))}
          </ul>
        )}
      </section>
      <ConfirmDialog request={confirm} onClose={() => setConfirm(null)} />
    </>
  );
}
