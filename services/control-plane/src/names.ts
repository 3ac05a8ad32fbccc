/**
 * Names people choose or providers send, as other people will see them (the admin view, sharing):
 * control characters, bidirectional controls (U+202E turns "exe.txt" around on screen) and
 * zero-width characters ("ad\u200bmin" looks like "admin") make a name show something it is not.
 */
const HIDDEN = /[\u0000-\u001f\u007f-\u009f\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]/;
const EVERY_HIDDEN = new RegExp(HIDDEN.source, 'g');

/** Whether the text holds a character that hides or reorders what is shown. */
export function hasHiddenCharacters(text: string): boolean {
  return HIDDEN.test(text);
}

/** The text without those characters (for names a provider sends, which deskhub cannot refuse). */
export function withoutHiddenCharacters(text: string): string {
  return text.replace(EVERY_HIDDEN, '');
}
