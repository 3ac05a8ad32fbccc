/**
 * A secret the server shows only once (a new API token, a share link's URL): focused when it
 * appears, in a read-only field that selects itself, with a Copy button that says whether the
 * clipboard took it (or selects the text for Ctrl+C when the browser refuses) and Done.
 */
import type { ComponentChildren } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';

export function ShownOnce({
  id,
  titleId = `${id}-title`,
  title,
  what,
  value,
  onDone,
  children,
  class: className = '',
}: {
  /** The section's id; the field is `<id>-value`. */
  id: string;
  /** The heading's id (default `<id>-title`). */
  titleId?: string;
  title: string;
  /** What it is, lower case: "token", "link" (the field's label and the Copy button say it). */
  what: string;
  value: string;
  onDone: () => void;
  children: ComponentChildren;
  class?: string;
}) {
  const heading = useRef<HTMLHeadingElement>(null);
  const field = useRef<HTMLInputElement>(null);
  const [copied, setCopied] = useState('');
  useEffect(() => heading.current?.focus(), [value]);

  const copy = async () => {
    try {
      await navigator.clipboard.writeText(value);
      setCopied('Copied to the clipboard.');
    } catch {
      // No clipboard permission: select the text so Ctrl+C copies it.
      field.current?.select();
      setCopied(`Copying was refused by the browser: the ${what} is selected, press Ctrl+C.`);
    }
  };
  const label = what.charAt(0).toUpperCase() + what.slice(1);

  return (
    <section class={`card ${className}`} aria-labelledby={titleId} id={id}>
      <h3 id={titleId} tabIndex={-1} ref={heading}>
        {title}
      </h3>
      {children}
      <label for={`${id}-value`}>{label}</label>
      <input
        id={`${id}-value`}
        ref={field}
        class="token-value"
        readOnly
        value={value}
        spellcheck={false}
        autocomplete="off"
        onFocus={(e) => (e.target as HTMLInputElement).select()}
      />
      <div class="actions">
        <button type="button" class="primary" onClick={() => void copy()}>
          Copy {what}
        </button>
        <button type="button" onClick={onDone}>
          Done
        </button>
      </div>
      <p role="status" aria-live="polite" class="muted">
        {copied}
      </p>
    </section>
  );
}
