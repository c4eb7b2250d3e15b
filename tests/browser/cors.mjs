// A front end on one origin calling an API on another through Portico, in headless
// Chromium (Debian's, driven by playwright-core). Prints what the page could see, as JSON.
//
// Usage: node cors.mjs <page URL> <disallowed page URL> <API base URL> <email>
import { chromium } from "playwright-core";

const [pageUrl, otherPageUrl, api, email] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const context = await browser.newContext();
  const page = await context.newPage();
  // What a page script gets from fetch: the status and body, or the error a blocked
  // cross-origin answer gives it.
  const fetchAll = (p, calls) => p.evaluate(async ({ api, calls }) => {
    const out = {};
    for (const [name, path, init] of calls) {
      try {
        const r = await fetch(api + path, { credentials: "include", ...init });
        out[name] = { status: r.status, body: await r.text() };
      } catch (e) {
        out[name] = { blocked: String(e) };
      }
    }
    return out;
  }, { api, calls });
  const preflighted = { method: "PUT", headers: { "content-type": "application/json", "x-custom": "1" }, body: "{}" };

  await page.goto(pageUrl);
  const signedOut = await fetchAll(page, [["signed_out", "/api/data", {}]]);
  // Sign up through the gateway; the session cookie lands in this browser context.
  const signUp = await context.request.post(`${api}/api/auth/sign-up/email`, {
    data: { name: "Browser", email, password: "password1234" },
  });
  const signedIn = await fetchAll(page, [
    ["simple", "/api/data", {}],
    ["preflighted", "/api/data", preflighted],
    ["no_cors_route", "/nocors/data", {}],
  ]);
  const other = await context.newPage();
  await other.goto(otherPageUrl);
  const disallowed = await fetchAll(other, [
    ["simple", "/api/data", {}],
    ["preflighted", "/api/data", preflighted],
  ]);
  console.log(JSON.stringify({ signUp: signUp.status(), signedOut, signedIn, disallowed }));
} finally {
  await browser.close();
}
