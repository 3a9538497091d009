// Reading a secret from standard input for commands: never from argv, where `ps` shows it.

/** The first line of a stream (without its line ending), e.g. `echo "$PASSWORD" | ...`. */
export async function readFirstLine(input: NodeJS.ReadableStream): Promise<string> {
  let text = '';
  for await (const chunk of input) {
    text += chunk.toString();
    const newline = text.indexOf('\n');
    if (newline !== -1) return text.slice(0, newline).replace(/\r$/, '');
  }
  return text.replace(/\r$/, '');
}
