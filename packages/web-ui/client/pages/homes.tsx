/**
 * Homes: the files a user's desktops keep across stop, delete and re-create (catalog `home`), with
 * their sizes, the desktops using them, and Delete (confirmed; refused by the server while a
 * desktop mounts the home, whose message the card shows).
 */
import { useState } from 'preact/hooks';
import { ConfirmDialog, type ConfirmRequest } from '../components/confirm.tsx';
import { HomeList } from '../components/home-list.tsx';

export const HOMES_EXPLAINED = 'Desktops of types with a home keep your files here across stop, delete and re-create.';

export function Homes() {
  const [confirm, setConfirm] = useState<ConfirmRequest | null>(null);
  const [announcement, setAnnouncement] = useState('');
  const [reloadKey, setReloadKey] = useState(0);
  return (
    <>
      <h1 tabIndex={-1}>Homes</h1>
      <p class="visually-hidden" role="status" aria-live="polite">
        {announcement}
      </p>
      <p>
        {HOMES_EXPLAINED} A home is deleted only when you delete it here, after deleting the desktops that use it (stopping one is
        not enough). One desktop at a time uses a home: stop it before starting another that keeps the same home.
      </p>
      <div class="toolbar">
        <button type="button" onClick={() => setReloadKey((k) => k + 1)}>
          Refresh
        </button>
      </div>
      <section aria-labelledby="homes-title">
        <h2 id="homes-title">Your homes</h2>
        <HomeList confirm={setConfirm} announce={setAnnouncement} reloadKey={reloadKey} empty={`You have no homes yet. ${HOMES_EXPLAINED}`} />
      </section>
      <ConfirmDialog request={confirm} onClose={() => setConfirm(null)} />
    </>
  );
}
