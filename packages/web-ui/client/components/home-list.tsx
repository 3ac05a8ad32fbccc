/**
 * Homes (catalog `home`) as cards: name, who shares it, size, when a desktop last took it, the
 * desktops mounting it, and Delete behind a confirmation. The control plane decides whether a
 * delete may happen (409 while any desktop, even a stopped one, mounts it): the card shows its
 * message. Used by the Homes view (the user's own) and the admin view (everyone's, owner shown).
 * On a swarm a home lives on one node, shown on its card; the admin view can move it to another
 * (GET /api/admin/nodes lists where), while no desktop runs with it.
 * Lists are read on load, on request and when the tab becomes visible again — not polled, since
 * every read measures the homes' sizes on the runtime.
 */
import { useCallback, useEffect, useState } from 'preact/hooks';
import { api, type Home, type HomeNode } from '../api.ts';
import { formatBytes, homeScope } from '../homes.ts';
import { linkTo } from '../router.ts';
import type { ConfirmRequest } from './confirm.tsx';
import { STATE_LABEL } from './desktop-card.tsx';
import { ago, exact } from './time.ts';

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** The admin's move control: a node that can take the home now, and Move. */
function MoveControl({ home, nodes, onMove }: { home: Home; nodes: HomeNode[]; onMove: (h: Home, node: HomeNode) => void }) {
  const targets = nodes.filter((n) => n.runtime === home.runtime && n.id !== home.node?.id);
  const [chosen, setChosen] = useState('');
  const selectId = `home-${home.id}-move-to`;
  if (!home.node || targets.length === 0) return null;
  const target = targets.find((n) => n.id === chosen);
  const running = home.usedBy.some((d) => d.state !== 'stopped' && d.state !== 'failed');
  return (
    <form
      class="move-home"
      onSubmit={(e) => {
        e.preventDefault();
        if (target) onMove(home, target);
      }}
    >
      <label for={selectId}>Move to</label>
      <select id={selectId} value={chosen} onChange={(e) => setChosen((e.target as HTMLSelectElement).value)}>
        <option value="">Choose a node…</option>
        {targets.map((n) => (
          <option key={n.id} value={n.id} disabled={!n.takesHomes}>
            {n.name}
            {n.takesHomes ? '' : ` (${n.state}, ${n.availability})`}
          </option>
        ))}
      </select>
      <button type="submit" disabled={!target || running} title={running ? 'Stop the desktop that uses it first' : undefined}>
        Move home<span class="visually-hidden"> {home.name} of {home.owner}</span>
      </button>
    </form>
  );
}

function HomeCard({ home, admin, nodes, error, onDelete, onMove }: { home: Home; admin: boolean; nodes: HomeNode[]; error: string | null; onDelete: (h: Home) => void; onMove: (h: Home, node: HomeNode) => void }) {
  const headingId = `home-${home.id}-title`;
  return (
    <li class="card home" id={`home-${home.id}`} aria-labelledby={headingId} data-home-id={home.id}>
      <div class="card-head">
        <h3 id={headingId} tabIndex={-1}>
          {home.name}
          {home.scope === 'desktop' && home.desktopName ? <span class="muted"> · {home.desktopName}</span> : null}
        </h3>
        <span class={`badge ${home.usedBy.length > 0 ? 'badge-running' : ''}`}>{home.usedBy.length > 0 ? 'In use' : 'Kept'}</span>
      </div>
      <dl class="facts">
        {admin ? (
          <div>
            <dt>Owner</dt>
            <dd>{home.owner}</dd>
          </div>
        ) : null}
        <div>
          <dt>Size</dt>
          <dd data-size={home.sizeBytes ?? ''} title={home.sizeBytes === null ? 'The runtime did not say' : `${home.sizeBytes} bytes`}>
            {formatBytes(home.sizeBytes)}
          </dd>
        </div>
        {home.node ? (
          <div>
            <dt>Node</dt>
            <dd data-node-id={home.node.id} title={`Its desktops run on this node (${home.node.id})`}>
              {home.node.name}
            </dd>
          </div>
        ) : null}
        <div>
          <dt>Last used</dt>
          <dd title={exact(home.lastUsedAt)}>{home.lastUsedAt ? ago(home.lastUsedAt) : 'Never'}</dd>
        </div>
        <div>
          <dt>Created</dt>
          <dd title={exact(home.createdAt)}>{ago(home.createdAt)}</dd>
        </div>
        <div class="wide">
          <dt>Shared by</dt>
          <dd>{homeScope(home, admin)}</dd>
        </div>
        <div class="wide">
          <dt>Used by</dt>
          <dd>
            {home.usedBy.length === 0 ? (
              'No desktop'
            ) : (
              <ul class="used-by">
                {home.usedBy.map((d) => (
                  <li key={d.id} data-desktop-id={d.id}>
                    {/* The owner can open a running desktop; anything else is a path to recognise on the desktops list. */}
                    {!admin && d.state === 'running' ? (
                      <a href={`/desktops/${encodeURIComponent(d.id)}`} onClick={linkTo(`/desktops/${encodeURIComponent(d.id)}`)}>
                        <code>/desktop/{d.proxyPath}/</code>
                      </a>
                    ) : (
                      <code>/desktop/{d.proxyPath}/</code>
                    )}{' '}
                    <span class="muted">({STATE_LABEL[d.state] ?? d.state})</span>
                  </li>
                ))}
              </ul>
            )}
          </dd>
        </div>
      </dl>
      {error ? (
        <p class="error" role="alert">
          {error}
        </p>
      ) : null}
      <div class="actions">
        {admin ? <MoveControl home={home} nodes={nodes} onMove={onMove} /> : null}
        <button type="button" class="danger" onClick={() => onDelete(home)}>
          Delete home<span class="visually-hidden"> {home.name}{admin ? ` of ${home.owner}` : ''}</span>
        </button>
      </div>
    </li>
  );
}

/**
 * The homes in scope. `confirm` opens the page's confirmation dialog; `announce` speaks results in
 * the page's live region; a change of `reloadKey` reads the list again; `onLoaded` hears each list read.
 */
export function HomeList({
  admin = false,
  confirm,
  announce,
  reloadKey = 0,
  empty,
  onLoaded,
}: {
  admin?: boolean;
  confirm: (request: ConfirmRequest) => void;
  announce: (text: string) => void;
  reloadKey?: number;
  empty: string;
  onLoaded?: (homes: Home[]) => void;
}) {
  const [homes, setHomes] = useState<Home[] | null>(null);
  const [loadError, setLoadError] = useState<string | null>(null);
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [nodes, setNodes] = useState<HomeNode[]>([]);

  const refresh = useCallback(async () => {
    try {
      const list = await (admin ? api.adminHomes() : api.homes());
      setHomes(list);
      setLoadError(null);
      onLoaded?.(list);
    } catch (err) {
      setLoadError(message(err));
    }
  }, [admin, onLoaded]);

  useEffect(() => void refresh(), [refresh, reloadKey]);
  useEffect(() => {
    // Where homes can be moved (Swarm); read with the list, empty on other runtimes.
    if (admin) api.adminNodes().then(setNodes, () => setNodes([]));
  }, [admin, reloadKey]);
  useEffect(() => {
    const onVisible = () => document.visibilityState === 'visible' && void refresh();
    document.addEventListener('visibilitychange', onVisible);
    return () => document.removeEventListener('visibilitychange', onVisible);
  }, [refresh]);

  const setError = (id: string, text: string | null) =>
    setErrors((all) => {
      const next = { ...all };
      if (text) next[id] = text;
      else delete next[id];
      return next;
    });

  const remove = (home: Home) => {
    const whose = admin ? ` of ${home.owner}` : '';
    confirm({
      title: `Delete the home ${home.name}${whose}?`,
      body: `Its files (${formatBytes(home.sizeBytes)}) are gone for good: no desktop gets them back, and this cannot be undone.`,
      confirmLabel: 'Delete home',
      onConfirm: () => {
        setError(home.id, null);
        (admin ? api.adminRemoveHome(home.id) : api.removeHome(home.id))
          .then(() => {
            setHomes((list) => (list ?? []).filter((x) => x.id !== home.id));
            announce(`The home ${home.name}${whose} is deleted.`);
            void refresh();
          })
          .catch((err) => {
            // 409: a desktop mounts it; the server's message says which and what to do.
            // The card's alert says it (once); the live region stays for successes.
            setError(home.id, `Could not delete the home ${home.name}: ${message(err)}`);
            void refresh();
          });
      },
    });
  };

  const move = (home: Home, node: HomeNode) => {
    confirm({
      title: `Move the home ${home.name} of ${home.owner} to ${node.name}?`,
      body: `Its files (${formatBytes(home.sizeBytes)}) are copied to ${node.name} and checked there, then removed from ${home.node?.name ?? 'its node'}. Its desktops run on ${node.name} from then on. No desktop may use it meanwhile.`,
      confirmLabel: 'Move home',
      onConfirm: () => {
        setError(home.id, null);
        announce(`Moving the home ${home.name} of ${home.owner} to ${node.name}…`);
        api
          .adminMoveHome(home.id, node.id)
          .then((moved) => {
            setHomes((list) => (list ?? []).map((x) => (x.id === moved.id ? moved : x)));
            announce(`The home ${home.name} of ${home.owner} is on ${node.name} now.`);
          })
          .catch((err) => {
            setError(home.id, `Could not move the home ${home.name}: ${message(err)}`);
            void refresh();
          });
      },
    });
  };

  return (
    <>
      {loadError ? (
        <p class="error" role="alert">
          Could not load the homes: {loadError}
        </p>
      ) : null}
      {homes === null ? (
        loadError ? null : <p aria-busy="true">Loading…</p>
      ) : homes.length === 0 ? (
        <p class="muted" id={admin ? 'no-homes-admin' : 'no-homes'}>
          {empty}
        </p>
      ) : (
        <ul class="cards" id={admin ? 'all-homes' : 'my-homes'}>
          {homes.map((h) => (
            <HomeCard key={h.id} home={h} admin={admin} nodes={nodes} error={errors[h.id] ?? null} onDelete={remove} onMove={move} />
          ))}
        </ul>
      )}
    </>
  );
}
