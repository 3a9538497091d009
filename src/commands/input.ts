// Reading a secret for commands, from standard input or a terminal prompt: never from argv,
// where `ps` shows it.

import { StringDecoder } from 'node:string_decoder';

type PasswordInput = NodeJS.ReadableStream & { isTTY?: boolean; setRawMode?: (on: boolean) => void };

/** From a terminal: a prompt without echo (asked twice with `confirm`). From a pipe: its first line, the rest left for the next reader. */
export async function readPassword(input: PasswordInput, output: NodeJS.WritableStream, prompt: string, confirm: boolean): Promise<string> {
  if (!input.isTTY) return readFirstLine(input);
  const first = await readHidden(input, output, prompt);
  if (!confirm) return first;
  const again = await readHidden(input, output, `${prompt.replace(/[:\s]*$/, '')} (again): `);
  if (again !== first) throw new Error('the passwords do not match');
  return first;
}

/**
 * The first line of a stream (a pipe: `echo "$PASSWORD" | ...`), without its \r?\n terminator;
 * what follows is left for the next reader. Rejects when the stream ends without a byte.
 */
export function readFirstLine(input: NodeJS.ReadableStream): Promise<string> {
  return new Promise((resolve, reject) => {
    const decoder = new StringDecoder('utf8');
    let text = '';
    let got = false;
    const finish = (err: Error | undefined, value?: string, rest = ''): void => {
      input.removeListener('data', onData);
      input.removeListener('end', onEnd);
      input.removeListener('error', onError);
      input.pause();
      if (rest !== '') input.unshift(Buffer.from(rest, 'utf8')); // leave what follows for the next reader
      if (err) reject(err);
      else resolve(value ?? '');
    };
    const onData = (chunk: Buffer | string): void => {
      got = true;
      text += typeof chunk === 'string' ? chunk : decoder.write(chunk);
      const nl = text.indexOf('\n');
      if (nl !== -1) finish(undefined, text.slice(0, nl).replace(/\r$/, ''), text.slice(nl + 1));
    };
    const onEnd = (): void => {
      text += decoder.end();
      if (!got) finish(new Error('no password on standard input'));
      else finish(undefined, text.replace(/\r$/, ''));
    };
    const onError = (err: Error): void => finish(err);
    input.on('data', onData);
    input.once('end', onEnd);
    input.once('error', onError);
    input.resume();
  });
}

/** From a terminal: raw mode, no echo; Enter ends, Backspace erases, Ctrl-C aborts. */
function readHidden(input: PasswordInput, output: NodeJS.WritableStream, prompt: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const decoder = new StringDecoder('utf8');
    let chars: string[] = [];
    let inEscape = false;
    output.write(prompt);
    input.setRawMode?.(true);
    const finish = (err: Error | undefined, rest = ''): void => {
      input.removeListener('data', onData);
      input.removeListener('end', onEnd);
      input.removeListener('error', onError);
      input.setRawMode?.(false);
      input.pause();
      // Keystrokes typed ahead (e.g. the confirmation, pasted) stay for the next read.
      if (rest !== '' && !err) input.unshift(Buffer.from(rest, 'utf8'));
      output.write('\n');
      if (err) reject(err);
      else resolve(chars.join(''));
    };
    const onData = (chunk: Buffer | string): void => {
      const text = typeof chunk === 'string' ? chunk : decoder.write(chunk);
      let pos = 0;
      for (const ch of text) {
        pos += ch.length;
        if (inEscape) {
          // Skip an escape sequence (arrow keys etc.): ESC [ params final-byte, or ESC + one char.
          if (ch === '[' || (ch >= '0' && ch <= '9') || ch === ';') continue;
          inEscape = false;
          continue;
        }
        switch (ch) {
          case '\r':
          case '\n': {
            // A CR LF pair (some terminals, pastes) is one Enter.
            const rest = text.slice(pos);
            finish(undefined, ch === '\r' && rest.startsWith('\n') ? rest.slice(1) : rest);
            return;
          }
          case '\u0003': // Ctrl-C
            chars = [];
            finish(new Error('interrupted'));
            return;
          case '\u0004': // Ctrl-D: end of input
            if (chars.length === 0) {
              finish(new Error('no password entered'));
              return;
            }
            finish(undefined, text.slice(pos));
            return;
          case '\u007f': // Backspace (DEL) and Ctrl-H
          case '\b':
            chars.pop();
            break;
          case '\u0015': // Ctrl-U: erase the line
            chars = [];
            break;
          case '\u001b':
            inEscape = true;
            break;
          default:
            if (!/\p{Cc}/u.test(ch)) chars.push(ch);
        }
      }
    };
    const onEnd = (): void => finish(new Error('input closed before the password was entered'));
    const onError = (err: Error): void => finish(err);
    input.on('data', onData);
    input.once('end', onEnd);
    input.once('error', onError);
    input.resume();
  });
}
