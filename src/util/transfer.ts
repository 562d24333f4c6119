// Handing memory to a worker thread without a copy where that is possible.
// Kept on its own: the threads' small scripts import it too.

/** A Uint8Array whose memory can be transferred to a thread: `b` itself when it owns its whole ArrayBuffer, else a copy. */
export function transferable(b: Uint8Array): Uint8Array {
  return b.byteOffset === 0 && b.buffer instanceof ArrayBuffer && b.byteLength === b.buffer.byteLength ? b : new Uint8Array(b);
}
