/**
 * "Shared with me" on the dashboard: the desktops others share with the signed-in user (GET
 * /api/shared: named shares, and links the user opened), each with its owner, name and type, the
 * access it gives ("View only" / "Control"), when that ends, and Open (the shared view) / Open in
 * new tab (its hand-off).
 */
import { desktopHref, type SharedDesktop } from '../api.ts';
import { sharedLabel } from '../pages/shared-view.tsx';
import { linkTo } from '../router.ts';
import { MODE_LABEL } from '../sharing.ts';
import { STATE_LABEL } from './desktop-card.tsx';
import { ago, exact } from './time.ts';

function SharedCard({ shared }: { shared: SharedDesktop }) {
  const label = sharedLabel(shared);
  const headingId = `shared-${shared.desktopId}-title`;
  const href = `/shared/${encodeURIComponent(shared.desktopId)}`;
  const running = shared.state === 'running';
  return (
    <li class="card desktop" aria-labelledby={headingId} data-shared-id={shared.desktopId}>
      <div class="card-head">
        <h3 id={headingId}>{label}</h3>
        <span class={`badge ${shared.mode === 'control' ? 'badge-starting' : 'badge-view'}`} data-mode={shared.mode}>
          <span class="visually-hidden">Access: </span>
          {MODE_LABEL[shared.mode]}
        </span>
      </div>
      <dl class="facts">
        <div>
          <dt>Owner</dt>
          <dd>{shared.owner}</dd>
        </div>
        <div>
          <dt>Type</dt>
          <dd>{shared.type}</dd>
        </div>
        <div>
          <dt>State</dt>
          <dd data-state={shared.state}>{STATE_LABEL[shared.state] ?? shared.state}</dd>
        </div>
        <div>
          <dt>Ends</dt>
          <dd title={exact(shared.expiresAt)}>{shared.expiresAt ? ago(shared.expiresAt) : 'When revoked'}</dd>
        </div>
        <div class="wide">
          <dt>Shared</dt>
          <dd>{shared.via === 'link' ? 'Through a link you opened' : 'With you by name'}</dd>
        </div>
      </dl>
      <div class="actions">
        {running ? (
          <>
            <a class="button primary" href={href} onClick={linkTo(href)}>
              Open<span class="visually-hidden"> {label}</span>
            </a>
            <a class="button" href={desktopHref(shared)} target="_blank" rel="noopener">
              Open<span class="visually-hidden"> {label}</span> in new tab
            </a>
          </>
        ) : (
          <p class="note">It opens once {shared.owner} starts it.</p>
        )}
      </div>
    </li>
  );
}

export function SharedList({ list, error }: { list: SharedDesktop[] | null; error: string | null }) {
  return (
    <section aria-labelledby="shared-title">
      <h2 id="shared-title">Shared with me</h2>
      {error ? (
        <p class="error" role="alert">
          Could not load the desktops shared with you: {error}
        </p>
      ) : null}
      {list === null ? (
        error ? null : <p aria-busy="true">Loading…</p>
      ) : list.length === 0 ? (
        <p class="muted">Nobody shares a desktop with you. Desktops shared with you, and share links you open, show here.</p>
      ) : (
        <ul class="cards" id="shared-with-me">
          {list.map((d) => (
            <SharedCard key={d.desktopId} shared={d} />
          ))}
        </ul>
      )}
    </section>
  );
}
