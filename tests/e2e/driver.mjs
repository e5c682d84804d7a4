// The browser side of tests/e2e/browser.py: Debian's chromium driven by playwright-core.
//
// Started as `node driver.mjs '<json options>'`; reads one JSON command per line on stdin and
// answers each with one JSON line on stdout: {"id", "ok": true, "value"} or {"id", "ok": false,
// "error"}. Every request the page makes is recorded; one whose origin is not `options.origin`
// (nor data:/blob:) is aborted, as on a hospital network without internet, and listed in
// `offOrigin`. Responses >= 400, failed requests, console errors and page errors are kept too.
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const options = JSON.parse(process.argv[2] || "{}");
const origin = new URL(options.origin).origin;
const log = { requests: [], offOrigin: [], httpErrors: [], failed: [], consoleErrors: [], pageErrors: [] };

const browser = await chromium.launch({
  executablePath: options.executablePath || "/usr/bin/chromium",
  headless: true,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--enable-unsafe-swiftshader",
    "--disable-quic",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
  ],
});
const context = await browser.newContext({ viewport: { width: options.width || 1400, height: options.height || 900 } });
await context.route("**/*", (route) => {
  const url = route.request().url();
  if (url.startsWith("data:") || url.startsWith("blob:") || new URL(url).origin === origin) return route.continue();
  log.offOrigin.push(url);
  return route.abort("blockedbyclient");
});
const page = await context.newPage();
page.on("request", (request) => log.requests.push({ method: request.method(), url: request.url() }));
page.on("response", (response) => {
  if (response.status() >= 400) log.httpErrors.push({ status: response.status(), url: response.url() });
});
page.on("requestfailed", (request) => log.failed.push({ url: request.url(), error: request.failure()?.errorText }));
page.on("console", (message) => {
  if (message.type() === "error") log.consoleErrors.push(message.text());
});
page.on("pageerror", (error) => log.pageErrors.push(String(error)));

async function centre(selector, timeout) {
  const box = await page.locator(selector).first().boundingBox({ timeout });
  if (!box) throw new Error(`${selector} is not visible`);
  return { x: box.x + box.width / 2, y: box.y + box.height / 2 };
}

const commands = {
  goto: async (c) => (await page.goto(new URL(c.url, origin).href, { waitUntil: "load", timeout: c.timeout }))?.status(),
  waitForSelector: async (c) => {
    await page.locator(c.selector).first().waitFor({ state: "visible", timeout: c.timeout });
    return true;
  },
  waitForText: async (c) => {
    const handle = await page.waitForFunction(
      (pattern) => (document.body?.innerText.match(new RegExp(pattern)) || [null])[0],
      c.pattern,
      { timeout: c.timeout, polling: 200 },
    );
    return handle.jsonValue();
  },
  click: async (c) => {
    const target = c.text !== undefined ? page.getByText(c.text, { exact: true }) : page.locator(c.selector);
    await target.first().click({ timeout: c.timeout });
    return page.url();
  },
  wheel: async (c) => {
    const point = await centre(c.selector, c.timeout);
    await page.mouse.move(point.x, point.y);
    for (let i = 0; i < (c.steps || 1); i++) {
      await page.mouse.wheel(0, c.deltaY ?? 100);
      await page.waitForTimeout(c.pause ?? 150);
    }
    return true;
  },
  text: async (c) => page.locator(c.selector).first().innerText({ timeout: c.timeout }),
  evaluate: async (c) => page.evaluate(c.expression),
  screenshot: async (c) => {
    await page.screenshot({ path: c.path, fullPage: Boolean(c.fullPage) });
    return c.path;
  },
  url: async () => page.url(),
  log: async () => log,
  close: async () => {
    await browser.close();
    return true;
  },
};

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  const command = JSON.parse(line);
  let answer;
  try {
    const run = commands[command.op];
    if (!run) throw new Error(`unknown op ${command.op}`);
    answer = { id: command.id, ok: true, value: (await run(command)) ?? null };
  } catch (error) {
    answer = { id: command.id, ok: false, error: String(error?.message || error) };
  }
  process.stdout.write(`${JSON.stringify(answer)}\n`);
  if (command.op === "close") break;
}
await browser.close().catch(() => {});
process.exit(0);
