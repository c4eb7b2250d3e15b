// Socket.io through Portico.
//
//   node socketio.mjs servers        two Socket.io servers (members a and b) on free ports;
//                                    prints "READY <port a> <port b>"
//   node socketio.mjs client <url> <cookie> <messages>
//                                    connects with long-polling, then upgrades to WebSocket,
//                                    and echoes <messages> messages; prints the result as JSON
import { createServer } from "node:http";
import { Server } from "socket.io";
import { io } from "socket.io-client";

const [mode, ...args] = process.argv.slice(2);

if (mode === "servers") {
  const ports = [];
  for (const name of ["a", "b"]) {
    const http = createServer();
    const server = new Server(http, { transports: ["polling", "websocket"] });
    server.on("connection", (socket) => {
      // The identity the gateway verified and injected, as this member saw it.
      socket.emit("hello", { member: name, userId: socket.handshake.headers["x-user-id"] || null });
      socket.on("echo", (message, ack) => ack(message));
    });
    await new Promise((resolve) => http.listen(0, "127.0.0.1", resolve));
    ports.push(http.address().port);
  }
  console.log(`READY ${ports.join(" ")}`);
  process.on("SIGTERM", () => process.exit(0));
} else if (mode === "client") {
  const [url, cookie, count] = args;
  const socket = io(url, {
    transports: ["polling", "websocket"],
    extraHeaders: { cookie },
    reconnection: false,
    timeout: 30000,
  });
  const fail = (why) => {
    console.log(JSON.stringify({ error: String(why) }));
    process.exit(1);
  };
  socket.on("connect_error", fail);
  // The transport the connection opened with, and its upgrade.
  let firstTransport = null;
  const upgradeErrors = [];
  // Generous bounds: the suite runs on 2 cores with a debug gateway beside this.
  const upgraded = new Promise((resolve, reject) => {
    socket.io.on("open", () => {
      const engine = socket.io.engine;
      firstTransport = engine.transport.name;
      engine.once("upgrade", resolve);
      engine.on("upgradeError", (e) => upgradeErrors.push(String(e)));
      setTimeout(() => reject(new Error(
        `no upgrade to websocket within 30 s of opening (transport ${engine.transport.name}; ` +
        `upgrade errors: ${upgradeErrors.join("; ") || "none"})`)), 30000);
    });
  });
  const hello = await new Promise((resolve) => socket.once("hello", resolve));
  await upgraded.catch(fail);
  let echoed = 0;
  const n = Number(count);
  for (let i = 0; i < n; i++) {
    const reply = await socket.timeout(30000).emitWithAck("echo", `message ${i}`).catch(fail);
    if (reply === `message ${i}`) echoed += 1;
  }
  console.log(JSON.stringify({ ...hello, firstTransport, transport: socket.io.engine.transport.name, echoed }));
  socket.close();
  process.exit(0);
}
