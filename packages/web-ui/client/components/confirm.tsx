/**
 * A confirmation step for actions that cannot be undone (deleting a desktop). The native modal
 * <dialog> gives focus trapping, Escape to cancel and the inert background for free.
 */
import { useEffect, useRef } from 'preact/hooks';

export interface ConfirmRequest {
  title: string;
  body: string;
  confirmLabel: string;
  onConfirm: () => void;
}

/** A ref for a <dialog> shown as a modal while `open` (the sharing panel uses it too). */
export function useModal(open: boolean) {
  const ref = useRef<HTMLDialogElement>(null);
  useEffect(() => {
    const dialog = ref.current;
    if (!dialog) return;
    if (open && !dialog.open) dialog.showModal();
    if (!open && dialog.open) dialog.close();
  }, [open]);
  return ref;
}

export function ConfirmDialog({ request, onClose }: { request: ConfirmRequest | null; onClose: () => void }) {
  const ref = useModal(request !== null);
  return (
    <dialog ref={ref} class="confirm" aria-labelledby="confirm-title" aria-describedby="confirm-body" onClose={onClose}>
      {request ? (
        <form
          method="dialog"
          onSubmit={(e) => {
            // The submitter tells which button was used; only the confirm button acts.
            const submitter = (e as SubmitEvent).submitter as HTMLButtonElement | null;
            if (submitter?.value === 'confirm') request.onConfirm();
          }}
        >
          <h2 id="confirm-title">{request.title}</h2>
          <p id="confirm-body">{request.body}</p>
          <div class="actions">
            {/* Cancel comes first so it is the default focus: Enter on a stray keypress does not delete. */}
            <button type="submit" value="cancel" autofocus>
              Cancel
            </button>
            <button type="submit" value="confirm" class="danger">
              {request.confirmLabel}
            </button>
          </div>
        </form>
      ) : null}
    </dialog>
  );
}
