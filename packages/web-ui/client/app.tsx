/**
 * The application shell: who is signed in (GET /api/me), which page the path names, and the
 * header with navigation and sign-out. Signed-out visitors are sent to /signin with `next` set so
 * they land where they were going. While signed in, the desktop access cookie is kept fresh
 * (access-renewal.ts), whichever page is open.
 */
import { useCallback, useEffect, useRef, useState } from 'preact/hooks';
import { api, ApiError, type Me } from './api.ts';
import { useAccessRenewal } from './access-renewal.ts';
import { Admin } from './pages/admin.tsx';
import { Dashboard } from './pages/dashboard.tsx';
import { DesktopView } from './pages/desktop-view.tsx';
import { Homes } from './pages/homes.tsx';
import { OpenShareLink, SharedView } from './pages/shared-view.tsx';
import { SignIn } from './pages/signin.tsx';
import { Tokens } from './pages/tokens.tsx';
import { linkTo, navigate, useRoute, type Route } from './router.ts';

type Session = { status: 'loading' } | { status: 'out' } | { status: 'in'; me: Me } | { status: 'error'; message: string };

const TITLES: Record<Route['page'], string> = {
  dashboard: 'Desktops',
  signin: 'Sign in',
  admin: 'All desktops',
  tokens: 'API tokens',
  homes: 'Homes',
  desktop: 'Desktop',
  shared: 'Shared desktop',
  'share-link': 'Shared desktop',
  missing: 'Not found',
};

export function isAdmin(me: Me): boolean {
  return Array.isArray(me.roles) && me.roles.includes('admin');
}

export function App() {
  const route = useRoute();
  const [session, setSession] = useState<Session>({ status: 'loading' });
  const first = useRef(true);

  const loadMe = useCallback(async () => {
    try {
      setSession({ status: 'in', me: await api.me() });
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) setSession({ status: 'out' });
      else setSession({ status: 'error', message: err instanceof Error ? err.message : String(err) });
    }
  }, []);

  useEffect(() => {
    void loadMe();
  }, [loadMe]);

  // The session ended elsewhere (logout in another tab, revoked): loadMe finds out and signs out here.
  useAccessRenewal(session.status === 'in', () => void loadMe());

  // Route guards: signed out -> sign-in (remembering where to go); signed in on /signin -> onwards.
  useEffect(() => {
    if (session.status === 'out' && route.page !== 'signin') {
      navigate(`/signin?next=${encodeURIComponent(location.pathname + location.search)}`, { replace: true });
    } else if (session.status === 'in' && route.page === 'signin') {
      // `next` may be a desktop under /desktop/, which this app does not render: leave the app for it.
      if (route.next.startsWith('/desktop/')) location.assign(route.next);
      else navigate(route.next, { replace: true });
    }
  }, [session, route]);

  // Page changes move focus to the new page's heading, as a full page load would for a screen reader.
  useEffect(() => {
    if (route.page !== 'desktop' && route.page !== 'shared') document.title = `${TITLES[route.page]} · deskhub`;
    if (first.current) {
      first.current = false;
      return;
    }
    const heading = document.querySelector<HTMLElement>('main h1, main [tabindex="-1"]');
    heading?.focus();
  }, [route, session.status]);

  if (session.status === 'loading') {
    return (
      <main id="main" class="page" aria-busy="true">
        <p>Loading…</p>
      </main>
    );
  }
  if (session.status === 'error') {
    return (
      <main id="main" class="page">
        <h1>deskhub is not answering</h1>
        <p class="error" role="alert">
          {session.message}
        </p>
        <button type="button" onClick={() => void loadMe()}>
          Try again
        </button>
      </main>
    );
  }
  if (route.page === 'signin' || session.status === 'out') {
    return (
      <main id="main" class="page narrow">
        {route.page === 'signin' ? <SignIn next={route.next} onSignedIn={loadMe} /> : <p>Redirecting to sign-in…</p>}
      </main>
    );
  }
  const me = session.me;
  if (route.page === 'desktop') return <DesktopView id={route.id} />;
  if (route.page === 'shared') return <SharedView id={route.id} />;
  if (route.page === 'share-link') return <OpenShareLink secret={route.secret} />;

  return (
    <>
      <a class="skip" href="#main">
        Skip to content
      </a>
      <header class="topbar">
        <a class="brand" href="/" onClick={linkTo('/')}>
          deskhub
        </a>
        <nav aria-label="Main">
          <ul>
            <li>
              <a href="/" onClick={linkTo('/')} aria-current={route.page === 'dashboard' ? 'page' : undefined}>
                My desktops
              </a>
            </li>
            <li>
              <a href="/homes" onClick={linkTo('/homes')} aria-current={route.page === 'homes' ? 'page' : undefined}>
                Homes
              </a>
            </li>
            {isAdmin(me) ? (
              <li>
                <a href="/admin" onClick={linkTo('/admin')} aria-current={route.page === 'admin' ? 'page' : undefined}>
                  Admin
                </a>
              </li>
            ) : null}
            <li>
              <a href="/tokens" onClick={linkTo('/tokens')} aria-current={route.page === 'tokens' ? 'page' : undefined}>
                API tokens
              </a>
            </li>
          </ul>
        </nav>
        <div class="who">
          <span>
            <span class="visually-hidden">Signed in as </span>
            <strong id="whoami">{me.username}</strong>
          </span>
          <button
            type="button"
            onClick={async () => {
              try {
                await api.logout();
              } finally {
                setSession({ status: 'out' });
                navigate('/signin', { replace: true });
              }
            }}
          >
            Sign out
          </button>
        </div>
      </header>
      <main id="main" class="page" tabIndex={-1}>
        {route.page === 'dashboard' ? <Dashboard /> : null}
        {route.page === 'admin' ? (
          isAdmin(me) ? (
            <Admin />
          ) : (
            <>
              <h1 tabIndex={-1}>Admins only</h1>
              <p>This page lists every user's desktops; your account does not have the admin role.</p>
            </>
          )
        ) : null}
        {route.page === 'tokens' ? <Tokens admin={isAdmin(me)} /> : null}
        {route.page === 'homes' ? <Homes /> : null}
        {route.page === 'missing' ? (
          <>
            <h1 tabIndex={-1}>Page not found</h1>
            <p>
              Nothing lives at <code>{route.path}</code>.{' '}
              <a href="/" onClick={linkTo('/')}>
                Go to your desktops
              </a>
              .
            </p>
          </>
        ) : null}
      </main>
    </>
  );
}
