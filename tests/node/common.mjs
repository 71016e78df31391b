// Shared by the scenario scripts: configuration from the environment, image
// summaries, and the "one JSON line on stdout, or the error on stderr" contract
// that tests/test_node_sdks.py relies on.

export function config() {
  const baseURL = process.env.FLUX_BASE_URL;
  const apiKey = process.env.FLUX_API_KEY;
  if (!baseURL || !apiKey) {
    throw new Error("set FLUX_BASE_URL (e.g. http://127.0.0.1:8000/v1) and FLUX_API_KEY");
  }
  return { baseURL, apiKey };
}

// What the Python side needs to check an image: its size in bytes, its first
// bytes (the format's signature) and the base64 itself (the fake's images are small).
export function imageSummary(b64) {
  if (typeof b64 !== "string") {
    return { b64: b64 ?? null };
  }
  const bytes = Buffer.from(b64, "base64");
  return { bytes: bytes.length, head: bytes.subarray(0, 8).toString("hex"), b64 };
}

// Everything an SDK error can tell: message, HTTP status, the body the SDK got,
// and the chain of causes (the AI SDK wraps validation failures).
export function describeError(error) {
  const parts = [];
  for (let e = error, depth = 0; e && depth < 5; e = e.cause, depth += 1) {
    const line = [`${e.name ?? "Error"}: ${e.message ?? String(e)}`];
    if (e.status ?? e.statusCode) line.push(`status=${e.status ?? e.statusCode}`);
    if (e.url) line.push(`url=${e.url}`);
    if (e.responseBody) line.push(`responseBody=${String(e.responseBody).slice(0, 2000)}`);
    if (e.error && typeof e.error === "object") line.push(`error=${JSON.stringify(e.error)}`);
    if (e.value !== undefined) line.push(`value=${JSON.stringify(e.value)?.slice(0, 2000)}`);
    parts.push(line.join(" "));
  }
  return parts.join("\n  caused by ");
}

// Run the scenario named by argv[2] from `scenarios` and print its result.
export async function main(scenarios) {
  const name = process.argv[2];
  const scenario = scenarios[name];
  if (!scenario) {
    process.stderr.write(`usage: node ${process.argv[1]} <${Object.keys(scenarios).join("|")}>\n`);
    process.exit(2);
  }
  try {
    const result = await scenario(config());
    process.stdout.write(JSON.stringify(result) + "\n");
  } catch (error) {
    process.stderr.write(`${name} failed: ${describeError(error)}\n`);
    process.exit(1);
  }
}
