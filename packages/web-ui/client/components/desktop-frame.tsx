/**
 * A desktop in the page, own or shared: the iframe (KasmVNC's iframe query on its address, the
 * clipboard and full screen allowed) and, when it is opened through a hand-off to its own origin,
 * the renewal frame that keeps that origin's access cookie fresh (renewal-frame.tsx).
 */
import type { Ref } from 'preact';
import { desktopHref, iframeSrc, type Desktop, type SharedDesktop } from '../api.ts';
import { renewalHref } from '../links.ts';
import { RenewalFrame } from './renewal-frame.tsx';

export function DesktopFrame({ desktop, title, frameRef }: { desktop: Desktop | SharedDesktop; title: string; frameRef: Ref<HTMLIFrameElement> }) {
  return (
    <>
      <iframe ref={frameRef} class="viewer-frame" title={title} src={iframeSrc(desktop)} allow="clipboard-read; clipboard-write; fullscreen" allowFullScreen />
      <RenewalFrame href={renewalHref(desktop, location.origin)} />
    </>
  );
}

/** The bar's buttons for a desktop shown in the page: Open in new tab (through its hand-off, if any) and Full screen. */
export function FrameActions({ desktop, frameRef }: { desktop: Desktop | SharedDesktop; frameRef: { current: HTMLIFrameElement | null } }) {
  return (
    <>
      <a class="button" href={desktopHref(desktop)} target="_blank" rel="noopener">
        Open in new tab
      </a>
      <button type="button" onClick={() => void frameRef.current?.requestFullscreen?.()}>
        Full screen
      </button>
    </>
  );
}
