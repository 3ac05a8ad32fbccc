/**
 * The admin view: every desktop on this deskhub with its owner, state, age, last activity and
 * whether the idle clocks apply to it; stop, start, delete or exempt from the clocks any of them;
 * the warm pool's unclaimed members per type (delete one: the pool refills); and every user's
 * homes, with delete. All through the admin API, which checks the role
 * server-side (the UI hiding the link is only a convenience).
 */
import { useCallback, useEffect, useState } from 'preact/hooks';
import { api, asList, ownerName, type CatalogType, type Desktop, type Home } from '../api.ts';
import { ConfirmDialog, type ConfirmRequest } from '../components/confirm.tsx';
import { DesktopCard, desktopLabel } from '../components/desktop-card.tsx';
import { HomeList } from '../components/home-list.tsx';
import { PoolList } from '../components/pool-list.tsx';
import { memberLabel } from '../pool.ts';

const REFRESH_MS = 5000;

export function Admin() {
  const [desktops, setDesktops] = useState<Desktop[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [confirm, setConfirm] = useState<ConfirmRequest | null>(null);
  const [announcement, setAnnouncement] = useState('');
  const [filter, setFilter] = useState('');
  const [homesReload, setHomesReload] = useState(0);
  const [homeNames, setHomeNames] = useState<ReadonlyMap<string, string>>(new Map());
  const homesLoaded = useCallback((homes: Home[]) => setHomeNames(new Map(homes.map((h) => [h.id, h.name]))), []);

  // Type names for the pool's headings (desktops carry the type id); the ids serve when this fails.
  const [typeNames, setTypeNames] = useState<ReadonlyMap<string, string>>(new Map());
  useEffect(() => {
    api
      .catalog()
      .then((c) => setTypeNames(new Map(asList<CatalogType>(c, 'catalog').map((t) => [t.id, t.name]))))
      .catch(() => {});
  }, []);

  const refresh = useCallback(async () => {
    try {
      setDesktops(asList<Desktop>(await api.adminDesktops(), 'desktops'));
      setError(null);
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
    }
  }, []);

  useEffect(() => {
    void refresh();
    const timer = setInterval(() => document.visibilityState === 'visible' && void refresh(), REFRESH_MS);
    return () => clearInterval(timer);
  }, [refresh]);

  /** Delete after confirming (a user's desktop or a pool member): the list drops it, the outcome is announced. */
  const confirmRemove = (d: Desktop, label: string, words: Omit<ConfirmRequest, 'onConfirm'> & { deleted: string }) => {
    const { deleted, ...request } = words;
    setConfirm({
      ...request,
      onConfirm: () => {
        api
          .adminRemove(d.id)
          .then(() => {
            setDesktops((list) => (list ?? []).filter((x) => x.id !== d.id));
            setAnnouncement(deleted);
            // Its home, if any, is free to delete now.
            if (d.homeId) setHomesReload((k) => k + 1);
          })
          .catch((err) => setAnnouncement(`Could not delete ${label}: ${err instanceof Error ? err.message : String(err)}`));
      },
    });
  };

  const actions = {
    stop: async (d: Desktop) => {
      await api.adminStop(d.id);
      await refresh();
      setAnnouncement(`Stopping ${desktopLabel(d)} of ${ownerName(d.owner)}.`);
    },
    start: async (d: Desktop) => {
      await api.adminStart(d.id);
      await refresh();
      setAnnouncement(`Starting ${desktopLabel(d)} of ${ownerName(d.owner)}.`);
    },
    setExempt: async (d: Desktop, exempt: boolean) => {
      const updated = await api.adminSetClocks(d.id, exempt);
      setDesktops((list) => (list ?? []).map((x) => (x.id === d.id ? { ...x, ...updated } : x)));
      setAnnouncement(exempt ? `${desktopLabel(d)} of ${ownerName(d.owner)} is exempt from the idle clocks.` : `${desktopLabel(d)} of ${ownerName(d.owner)} is under the idle clocks again.`);
    },
    remove: (d: Desktop) =>
      confirmRemove(d, desktopLabel(d), {
        title: `Delete ${desktopLabel(d)} of ${ownerName(d.owner)}?`,
        body: 'The desktop and everything in it are removed for its owner. This cannot be undone.',
        confirmLabel: 'Delete desktop',
        deleted: `${desktopLabel(d)} deleted.`,
      }),
  };

  const removeMember = (m: Desktop) =>
    confirmRemove(m, memberLabel(m), {
      title: `Delete ${memberLabel(m)} of the ${typeNames.get(m.type) ?? m.type} pool?`,
      body: 'Nobody uses it yet. The pool starts another in its place.',
      confirmLabel: 'Delete member',
      deleted: `${memberLabel(m)} deleted; the pool starts another.`,
    });

  // Warm pool members (unowned, no route) have their own section; the rest are users' desktops.
  const owned = (desktops ?? []).filter((d) => !d.pool);
  const members = (desktops ?? []).filter((d) => d.pool);
  const needle = filter.trim().toLowerCase();
  const shown = owned.filter(
    (d) => !needle || [ownerName(d.owner), d.proxyPath, d.type, d.state, d.name ?? d.label ?? ''].some((v) => v.toLowerCase().includes(needle)),
  );

  return (
    <>
      <h1 tabIndex={-1}>All desktops</h1>
      <p class="visually-hidden" role="status" aria-live="polite">
        {announcement}
      </p>
      <div class="toolbar">
        <label for="admin-filter">Filter by owner, address, type or state</label>
        <input id="admin-filter" type="search" value={filter} onInput={(e) => setFilter((e.target as HTMLInputElement).value)} />
        <button
          type="button"
          onClick={() => {
            void refresh();
            setHomesReload((k) => k + 1);
          }}
        >
          Refresh
        </button>
      </div>
      {error ? (
        <p class="error" role="alert">
          Could not load the desktops: {error}
        </p>
      ) : null}
      {desktops === null ? (
        <p aria-busy="true">Loading…</p>
      ) : shown.length === 0 ? (
        <p class="muted">{owned.length === 0 ? 'No user has a desktop.' : 'No desktop matches the filter.'}</p>
      ) : (
        <>
          <h2 class="visually-hidden">Desktops of every user</h2>
          <p class="muted">
            {shown.length} of {owned.length} desktops
          </p>
          <ul class="cards" id="all-desktops">
            {shown.map((d) => (
              <DesktopCard key={d.id} desktop={d} actions={actions} admin homeName={d.homeId ? homeNames.get(d.homeId) : undefined} />
            ))}
          </ul>
        </>
      )}
      <section aria-labelledby="admin-pool-title" id="warm-pool">
        <h2 id="admin-pool-title">Warm pool</h2>
        <p class="muted">
          Started desktops nobody owns yet, kept ready per type so a launch gets one at once. They have no address and no owner until a
          launch claims one; a deleted member is replaced.
        </p>
        {desktops === null ? null : <PoolList members={members} typeNames={typeNames} onDelete={removeMember} />}
      </section>
      <section aria-labelledby="admin-homes-title">
        <h2 id="admin-homes-title">Homes of every user</h2>
        <p class="muted">Files kept across desktops' lives. A home can be deleted once no desktop uses it; its owner loses its files for good.</p>
        <HomeList admin confirm={setConfirm} announce={setAnnouncement} reloadKey={homesReload} onLoaded={homesLoaded} empty="No user has a home." />
      </section>
      <ConfirmDialog request={confirm} onClose={() => setConfirm(null)} />
    </>
  );
}
