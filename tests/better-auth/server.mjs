// A real Better Auth server for Portico's tests: memory database, email+password, the jwt
// and bearer plugins. PORT=0 picks a free port; prints "READY <listen-url>" once listening.
//
// Env: PORT, BETTER_AUTH_SECRET, BETTER_AUTH_URL (the public base URL, default the listen
// URL; an https one makes the cookies `__Secure-`), COOKIE_CACHE (unset | compact | jwt |
// jwe | jwks: the session_data cookie cache strategy), COOKIE_CACHE_MAX_AGE (seconds).
import { createServer } from "node:http";
import { betterAuth } from "better-auth";
import { memoryAdapter } from "better-auth/adapters/memory";
import { bearer, jwt } from "better-auth/plugins";
import { toNodeHandler } from "better-auth/node";

const host = "127.0.0.1";
const server = createServer();
server.listen(Number(process.env.PORT || 0), host, () => {
  const listenURL = `http://${host}:${server.address().port}`;
  const baseURL = process.env.BETTER_AUTH_URL || listenURL;
  const cache = process.env.COOKIE_CACHE;
  const strategy = cache === "jwks" ? "jwt" : cache;
  const maxAge = Number(process.env.COOKIE_CACHE_MAX_AGE || 300);
  const auth = betterAuth({
    baseURL,
    secret: process.env.BETTER_AUTH_SECRET || "gateway-test-secret-0123456789abcdef0123",
    database: memoryAdapter({ user: [], session: [], account: [], verification: [], jwks: [] }),
    emailAndPassword: { enabled: true },
    session: strategy ? { cookieCache: { enabled: true, maxAge, strategy } } : undefined,
    plugins: [jwt({ sessionCookieCache: cache === "jwks" }), bearer()],
    rateLimit: { enabled: false },
    telemetry: { enabled: false },
  });
  server.on("request", toNodeHandler(auth));
  console.log(`READY ${listenURL}`);
});
process.on("SIGTERM", () => server.close(() => process.exit(0)));
