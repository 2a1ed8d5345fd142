// Compiled by test/types.test.mjs: `import sdk = require(...)` sees module.exports as index.cjs
// builds it (the classes, and `.default`, the class too).
import sdk = require("tilemore-sdk");

const tm: sdk.Tilemore = new sdk.Tilemore({ apiEndpoint: "http://127.0.0.1:9", apiToken: "t" });
const Default: typeof sdk.Tilemore = sdk.default;

export async function misuse(): Promise<void> {
  // @ts-expect-error: not an output format
  await tm.create("./in.jpg", "gif", {});
}

console.log(typeof Default, tm instanceof Default, typeof sdk.webhooks.verify);
