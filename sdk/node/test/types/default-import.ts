// Compiled by test/types.test.mjs (tsc from npm): the typings as a user sees them. The test
// compiles this one program as esm.mts, cjs.cts and commonjs.ts: the name says what kind of
// module it is, and the same uses must type-check in each.
import Tilemore, {
  RateLimitError, TilemoreError, webhooks,
  type Balance, type HistoryDay, type Operation, type Payment, type ResultFile, type ResultLink,
  type ResultStream, type SubAccount, type SubAccountToken, type Thread, type ThreadPage,
} from "tilemore-sdk";

const tm = new Tilemore({ apiEndpoint: "http://127.0.0.1:9", apiToken: "t" });
const guide = new Tilemore({ api_endpoint: "http://127.0.0.1:9", api_token: "t", domain: "d", debug_mode: false });
const abort = new AbortController();

export async function uses(): Promise<void> {
  const fromEnv: Tilemore = new Tilemore();  // TILEMORE_API_ENDPOINT, TILEMORE_API_TOKEN
  const thread: Thread = await tm.create("./in.jpg", "jpeg", { master: {} }, {
    meta: { ref: "a" }, signal: abort.signal,
    onProgress: (phase, done, total) => console.log(phase.length, done + (total ?? 0)),
  });
  const done: Thread = await tm.wait(thread, { signal: abort.signal, timeoutMs: 1000 });
  const link: ResultLink | undefined = done.result;
  const stream: ResultStream = await guide.submit("./in.jpg", "jpeg", { shifter: {} });
  stream.pipe(process.stdout);
  const sha: string = stream.tilemore.sha256;
  const file: ResultFile = await tm.run(Buffer.from("x"), "png", {}, { output: "out.png" });
  const again: ResultFile = await tm.download(done, { output: new URL("file:///tmp/out.png") });
  const page: ThreadPage = await tm.list({ status: "done", createdSince: new Date(), metaPart: ["shop"], limit: 10, signal: abort.signal });
  for await (const t of tm.listAll({ meta_part: "shop" })) console.log(t.thread_id);
  const retried: Thread = await tm.retry(page.threads[0] ?? "id");
  const balance: Balance = await tm.balance();
  const sub: Balance = await tm.balance("studio", { signal: abort.signal });
  const days: HistoryDay[] = await tm.history({ account: "studio" });
  const ops: Operation[] = await tm.operations({ date: "2026-01-01" });
  const token: SubAccountToken = await tm.createSubaccountToken("studio");
  const paid: Payment = await tm.recordPayment("studio", "p-1", "2.5");
  const accounts: SubAccount[] = await tm.subaccounts();
  console.log(link, sha, file.path, again.bytes, retried.status, balance.available, sub, days[0]?.date,
              ops[0]?.kind, token.token, paid.replayed, accounts.length, fromEnv);
  try {
    await tm.get("id");
  } catch (e) {
    if (e instanceof RateLimitError) console.log(e.retryAfter, e.rateLimit.remaining, e.requestId);
    if (e instanceof TilemoreError) console.log(e.code, e.status);
  }
  const event = webhooks.constructEvent<{ type: string }>("{}", "t=1,v1=00", ["a", "b"], { tolerance: 60 });
  console.log(event.type);
  // @ts-expect-error: not an output format
  await tm.create("./in.jpg", "gif", {});
  // @ts-expect-error: the signal is an AbortSignal
  await tm.get("id", { signal: "soon" });
}

console.log(typeof Tilemore, tm instanceof Tilemore, typeof webhooks.verify);
