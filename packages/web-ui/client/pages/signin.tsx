/**
 * Sign-in: one button per configured identity provider, and the dev sign-in form where the
 * control plane runs with AUTH_MODE=dev. After signing in the user goes back to `next` (a path
 * on this origin), which is how a desktop link opened while signed out comes back to the desktop.
 */
import { useEffect, useState } from 'preact/hooks';
import { api, ApiError, type Providers } from '../api.ts';

function withNext(loginUrl: string, next: string): string {
  if (next === '/') return loginUrl;
  return loginUrl + (loginUrl.includes('?') ? '&' : '?') + 'next=' + encodeURIComponent(next);
}

export function SignIn({ next, onSignedIn }: { next: string; onSignedIn: () => Promise<void> }) {
  const [providers, setProviders] = useState<Providers | null>(null);
  const [loadError, setLoadError] = useState<string | null>(null);
  const [username, setUsername] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);

  useEffect(() => {
    api
      .providers()
      .then(setProviders)
      .catch((err) => setLoadError(err instanceof Error ? err.message : String(err)));
  }, []);

  const showDev = providers !== null && providers.devLogin !== false;

  return (
    <div class="signin">
      <h1 tabIndex={-1}>Sign in to deskhub</h1>
      <p class="muted">Your desktops, in your browser.</p>
      {loadError ? (
        <p class="error" role="alert">
          Could not load the sign-in options: {loadError}
        </p>
      ) : null}
      {providers === null && !loadError ? <p aria-busy="true">Loading…</p> : null}
      {providers && providers.providers.length > 0 ? (
        <section aria-labelledby="providers-title">
          <h2 id="providers-title">With your account</h2>
          <ul class="providers">
            {providers.providers.map((p) => (
              <li key={p.id}>
                <a class="button primary block" href={withNext(p.loginUrl, next)}>
                  Sign in with {p.name}
                </a>
              </li>
            ))}
          </ul>
        </section>
      ) : null}
      {showDev ? (
        <section aria-labelledby="dev-title">
          <h2 id="dev-title">Development sign-in</h2>
          <p class="muted">No password: this deskhub runs in development mode, for one machine.</p>
          <form
            class="stack"
            onSubmit={async (e) => {
              e.preventDefault();
              const name = username.trim();
              if (!name) {
                setError('Enter a username.');
                return;
              }
              setBusy(true);
              setError(null);
              try {
                await api.devLogin(name);
                await onSignedIn();
              } catch (err) {
                setError(
                  err instanceof ApiError && err.status === 404
                    ? 'Development sign-in is not enabled on this deskhub.'
                    : err instanceof Error
                      ? err.message
                      : String(err),
                );
              } finally {
                setBusy(false);
              }
            }}
          >
            <label for="dev-username">Username</label>
            <input
              id="dev-username"
              name="username"
              value={username}
              onInput={(e) => setUsername((e.target as HTMLInputElement).value)}
              autocomplete="username"
              autocapitalize="none"
              spellcheck={false}
              required
              aria-invalid={error ? 'true' : undefined}
              aria-describedby={error ? 'dev-error' : undefined}
            />
            <button type="submit" class="primary" disabled={busy}>
              {busy ? 'Signing in…' : 'Sign in'}
            </button>
            {error ? (
              <p class="error" id="dev-error" role="alert">
                {error}
              </p>
            ) : null}
          </form>
        </section>
      ) : null}
      {providers && providers.providers.length === 0 && providers.devLogin === false ? (
        <p class="error" role="alert">
          No sign-in method is configured. An administrator needs to set up an identity provider.
        </p>
      ) : null}
    </div>
  );
}
