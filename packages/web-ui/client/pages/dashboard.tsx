/**
 * The dashboard: the catalog as cards (can this type run here, and if not why) with Launch, and
 * the signed-in user's desktops with live progress and their actions. The list is refreshed by a
 * bounded poll while the page is visible, so changes made elsewhere (another tab, the reconciler,
 * the idle clocks: a warning ended by input, a disconnect) show up without a reload; countdowns
 * tick in between from the deadlines the last refresh brought.
 */
import { useCallback, useEffect, useRef, useState } from 'preact/hooks';
import { api, ApiError, asList, type CatalogType, type Desktop, type SharedDesktop } from '../api.ts';
import { ConfirmDialog, type ConfirmRequest } from '../components/confirm.tsx';
import { DesktopCard, desktopLabel } from '../components/desktop-card.tsx';
import { SharedList } from '../components/shared-list.tsx';

const REFRESH_MS = 5000;

function CatalogCard({ type, onLaunch }: { type: CatalogType; onLaunch: (type: CatalogType, name: string) => Promise<void> }) {
  const [name, setName] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const id = `type-${type.id}`;
  return (
    <li class={`card type ${type.available ? '' : 'unavailable'}`} aria-labelledby={`${id}-title`} data-type-id={type.id}>
      <div class="card-head">
        <h3 id={`${id}-title`}>{type.name}</h3>
        <span class={`badge ${type.available ? 'badge-running' : 'badge-failed'}`}>
          {type.available ? 'Can run here' : 'Unavailable'}
        </span>
      </div>
      {type.description ? <p>{type.description}</p> : null}
      <p class="muted">
        <span class="visually-hidden">Runtime: </span>
        {type.runtime} · <code>{type.id}</code>
      </p>
      {!type.available ? (
        <p class="reason">
          <strong>Why not:</strong> {type.reason || 'The control plane did not say.'}
        </p>
      ) : null}
      {type.available ? (
        <form
          class="launch"
          onSubmit={async (e) => {
            e.preventDefault();
            if (busy) return;
            setBusy(true);
            setError(null);
            try {
              await onLaunch(type, name.trim());
              setName('');
            } catch (err) {
              setError(err instanceof Error ? err.message : String(err));
            } finally {
              setBusy(false);
            }
          }}
        >
          <label for={`${id}-name`}>
            Name <span class="muted">(optional)</span>
          </label>
          <input
            id={`${id}-name`}
            name="name"
            value={name}
            onInput={(e) => setName((e.target as HTMLInputElement).value)}
            maxLength={40}
            autocomplete="off"
            spellcheck={false}
            aria-describedby={`${id}-name-hint`}
          />
          <span id={`${id}-name-hint`} class="hint">
            Letters, digits and dashes; part of the desktop's address.
          </span>
          <button type="submit" class="primary" disabled={busy}>
            {busy ? 'Launching…' : 'Launch'}
            <span class="visually-hidden"> {type.name}</span>
          </button>
          {error ? (
            <p class="error" role="alert">
              {error}
            </p>
          ) : null}
        </form>
      ) : null}
    </li>
  );
}

export function Dashboard() {
  const [catalog, setCatalog] = useState<CatalogType[] | null>(null);
  const [catalogError, setCatalogError] = useState<string | null>(null);
  const [desktops, setDesktops] = useState<Desktop[] | null>(null);
  const [listError, setListError] = useState<string | null>(null);
  // Shared with me; `false`: the control plane has no sharing (404), so the section is left out.
  const [shared, setShared] = useState<SharedDesktop[] | null | false>(null);
  const [sharedError, setSharedError] = useState<string | null>(null);
  const sharingMissing = useRef(false);
  const [confirm, setConfirm] = useState<ConfirmRequest | null>(null);
  const [announcement, setAnnouncement] = useState('');
  const mounted = useRef(true);
  // Home names for the cards (desktops carry only homeId). Read when a desktop shows a home not
  // seen yet, not on every refresh: each read of /api/volumes measures the homes' sizes.
  const [homeNames, setHomeNames] = useState<ReadonlyMap<string, string>>(new Map());
  const askedHomes = useRef(new Set<string>());

  const refresh = useCallback(async () => {
    try {
      const list = asList<Desktop>(await api.desktops(), 'desktops');
      if (mounted.current) {
        setDesktops(list);
        setListError(null);
      }
    } catch (err) {
      if (mounted.current) setListError(err instanceof Error ? err.message : String(err));
    }
    if (sharingMissing.current) return;
    try {
      const list = await api.shared();
      if (mounted.current) {
        setShared(list);
        setSharedError(null);
      }
    } catch (err) {
      if (!mounted.current) return;
      if (err instanceof ApiError && err.status === 404) {
        sharingMissing.current = true;
        setShared(false);
      } else setSharedError(err instanceof Error ? err.message : String(err));
    }
  }, []);

  useEffect(() => {
    mounted.current = true;
    api
      .catalog()
      // What can run here first; the order within each group is the catalog's.
      .then((c) => setCatalog([...asList<CatalogType>(c, 'catalog')].sort((a, b) => Number(b.available) - Number(a.available))))
      .catch((err) => setCatalogError(err instanceof Error ? err.message : String(err)));
    void refresh();
    const timer = setInterval(() => {
      if (document.visibilityState === 'visible') void refresh();
    }, REFRESH_MS);
    const onVisible = () => document.visibilityState === 'visible' && void refresh();
    document.addEventListener('visibilitychange', onVisible);
    return () => {
      mounted.current = false;
      clearInterval(timer);
      document.removeEventListener('visibilitychange', onVisible);
    };
  }, [refresh]);

  useEffect(() => {
    const unknown = (desktops ?? []).map((d) => d.homeId).filter((id): id is string => Boolean(id) && !homeNames.has(id!) && !askedHomes.current.has(id!));
    if (unknown.length === 0) return;
    for (const id of unknown) askedHomes.current.add(id);
    api
      .homes()
      .then((homes) => mounted.current && setHomeNames(new Map(homes.map((h) => [h.id, h.name]))))
      // Without names the cards still say there is a home, and link to Homes.
      .catch(() => {});
  }, [desktops, homeNames]);

  const replace = (d: Desktop) => setDesktops((list) => (list ?? []).map((x) => (x.id === d.id ? { ...x, ...d } : x)));

  const launch = async (type: CatalogType, name: string) => {
    const created = await api.create(type.id, name || undefined);
    setDesktops((list) => [created, ...(list ?? []).filter((x) => x.id !== created.id)]);
    setAnnouncement(`Launching ${desktopLabel(created)}. Progress is shown under My desktops.`);
  };

  const actions = {
    stop: async (d: Desktop) => {
      await api.stop(d.id);
      replace({ ...d, state: 'stopping' });
      await refresh();
    },
    start: async (d: Desktop) => {
      await api.start(d.id);
      replace({ ...d, state: 'starting', reason: null });
    },
    remove: (d: Desktop) =>
      setConfirm({
        title: `Delete ${desktopLabel(d)}?`,
        body: 'The desktop and everything in it are removed. This cannot be undone.',
        confirmLabel: 'Delete desktop',
        onConfirm: () => {
          api
            .remove(d.id)
            .then(() => {
              setDesktops((list) => (list ?? []).filter((x) => x.id !== d.id));
              setAnnouncement(`${desktopLabel(d)} deleted.`);
            })
            .catch((err) => setAnnouncement(`Could not delete ${desktopLabel(d)}: ${err instanceof Error ? err.message : String(err)}`));
        },
      }),
    newHome: (d: Desktop) =>
      setConfirm({
        title: `Start ${desktopLabel(d)} with a new, empty home?`,
        body:
          "Your home stays on its node with all its files, and new desktops use it again once that node is back. This desktop starts with a stand-in home that is empty, and keeps it. Your choice is recorded in the desktop's history.",
        confirmLabel: 'Start with a new empty home',
        onConfirm: () => {
          api
            .startWithNewHome(d.id)
            .then((started) => {
              replace(started);
              setAnnouncement(`Starting ${desktopLabel(d)} with a new, empty home.`);
            })
            .catch((err) => setAnnouncement(`Could not start ${desktopLabel(d)} with a new home: ${err instanceof Error ? err.message : String(err)}`));
        },
      }),
    keepAlive: async (d: Desktop) => {
      const held = Boolean(d.clocks?.disconnected);
      replace(await api.keepAlive(d.id));
      setAnnouncement(held ? `${desktopLabel(d)} can be connected again.` : `${desktopLabel(d)} keeps running.`);
    },
    settled: (d: Desktop) => {
      replace(d);
      setAnnouncement(d.state === 'running' ? `${desktopLabel(d)} is ready.` : `${desktopLabel(d)} is ${d.state}.`);
    },
  };

  return (
    <>
      <h1 tabIndex={-1}>Desktops</h1>
      <p class="visually-hidden" role="status" aria-live="polite">
        {announcement}
      </p>
      <section aria-labelledby="mine-title">
        <h2 id="mine-title">My desktops</h2>
        {listError ? (
          <p class="error" role="alert">
            Could not load your desktops: {listError}
          </p>
        ) : null}
        {desktops === null ? (
          <p aria-busy="true">Loading…</p>
        ) : desktops.length === 0 ? (
          <p class="muted">No desktops yet. Launch one below.</p>
        ) : (
          <ul class="cards" id="my-desktops">
            {desktops.map((d) => (
              <DesktopCard key={d.id} desktop={d} actions={actions} homeName={d.homeId ? homeNames.get(d.homeId) : undefined} />
            ))}
          </ul>
        )}
      </section>
      {shared === false ? null : <SharedList list={shared} error={sharedError} />}
      <section aria-labelledby="catalog-title">
        <h2 id="catalog-title">Launch a desktop</h2>
        {catalogError ? (
          <p class="error" role="alert">
            Could not load the catalog: {catalogError}
          </p>
        ) : catalog === null ? (
          <p aria-busy="true">Loading…</p>
        ) : catalog.length === 0 ? (
          <p class="muted">The catalog is empty.</p>
        ) : (
          <ul class="cards" id="catalog">
            {catalog.map((t) => (
              <CatalogCard key={t.id} type={t} onLaunch={launch} />
            ))}
          </ul>
        )}
      </section>
      <ConfirmDialog request={confirm} onClose={() => setConfirm(null)} />
    </>
  );
}
