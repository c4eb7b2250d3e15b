// The admin status page in headless Chromium: waits until <member> shows healthy (prints
// "HEALTHY"), then until it shows unhealthy, takes a screenshot, and prints what the page
// showed, as JSON.
//
// Usage: node status.mjs <status page URL> <member address> <screenshot path>
import { chromium } from "playwright-core";

const [url, member, screenshot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 800 } });
  const failed = [];
  page.on("requestfailed", (r) => failed.push(r.url()));
  await page.goto(url);
  const row = `tr[data-member="${member}"]`;
  await page.waitForSelector(`${row}[data-health="healthy"]`, { timeout: 15000 });
  console.log("HEALTHY");
  // The page refreshes itself: no reload from here.
  await page.waitForSelector(`${row}[data-health="unhealthy"]`, { timeout: 20000 });
  await page.screenshot({ path: screenshot, fullPage: true });
  const meta = await page.textContent("#meta");
  const routes = await page.$$eval("#routes tr", (rows) => rows.map((r) => r.textContent));
  console.log(JSON.stringify({ meta, routes, failed }));
} finally {
  await browser.close();
}
