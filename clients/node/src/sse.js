// A small server-sent events reader: yields the `data` of each event as a string.

/**
 * Reads `body` (a web ReadableStream of bytes) and yields the data of every event in order.
 * Lines end with LF, CRLF or CR; several `data:` lines of one event are joined with "\n";
 * comments and other fields are ignored. `onChunk` is called for every chunk read (used for
 * the idle timeout).
 */
export async function* readSSE(body, onChunk = () => {}) {
  const decoder = new TextDecoder();
  const reader = body.getReader();
  let buffer = '';
  let data = [];
  let pendingCR = false;
  let finished = false;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) { finished = true; break; }
      onChunk();
      buffer += decoder.decode(value, { stream: true });
      // A CR at the very end may be the first half of a CRLF split across chunks.
      if (pendingCR && buffer.startsWith('\n')) buffer = buffer.slice(1);
      pendingCR = false;
      let start = 0;
      for (;;) {
        const cr = buffer.indexOf('\r', start);
        const lf = buffer.indexOf('\n', start);
        let end;
        if (cr === -1 && lf === -1) break;
        if (cr === -1 || (lf !== -1 && lf < cr)) end = lf;
        else end = cr;
        const line = buffer.slice(start, end);
        if (buffer[end] === '\r') {
          if (end + 1 === buffer.length) { pendingCR = true; start = end + 1; }
          else start = buffer[end + 1] === '\n' ? end + 2 : end + 1;
        } else {
          start = end + 1;
        }
        if (line === '') {
          if (data.length) { yield data.join('\n'); data = []; }
          continue;
        }
        if (line.startsWith(':')) continue;
        const colon = line.indexOf(':');
        const field = colon === -1 ? line : line.slice(0, colon);
        if (field !== 'data') continue;
        let text = colon === -1 ? '' : line.slice(colon + 1);
        if (text.startsWith(' ')) text = text.slice(1);
        data.push(text);
      }
      buffer = buffer.slice(start);
    }
    buffer += decoder.decode();
    if (buffer.startsWith('data:')) {
      let text = buffer.slice(5);
      if (text.startsWith(' ')) text = text.slice(1);
      data.push(text);
    }
    if (data.length) yield data.join('\n');
  } finally {
    // Stopped early (the consumer broke out, or an error): let go of the connection.
    if (!finished) await reader.cancel().catch(() => {});
    reader.releaseLock();
  }
}
