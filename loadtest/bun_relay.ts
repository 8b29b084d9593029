/**
 * A minimal room relay on Bun.serve's built-in WebSocket (uWebSockets): the bar fastchat is
 * compared with.
 *
 * The same subset as loadtest/ws_relay.py: no auth, no storage, no validation beyond what the
 * benchmark needs. `join_room` subscribes the connection to the room's topic, `send_message`
 * builds a fastchat-shaped `new_message` event, serializes it once and hands it to uWS's own
 * pub/sub (`server.publish`), then acks the sender. Limits are raised so that a saturated run
 * drops nothing: no backpressure limit and 64 MiB messages.
 * Run: `bun loadtest/bun_relay.ts --port 0 [--compression]` (prints its URL on stderr).
 */

import type { ServerWebSocket } from "bun";
import { parseArgs } from "node:util";

type Conn = { userId: string; joined: Set<string> };
type Message = { type?: string; roomId?: unknown; name?: unknown; content?: unknown; clientId?: unknown };

const { values: args } = parseArgs({
  args: Bun.argv.slice(2),
  options: {
    host: { type: "string", default: "127.0.0.1" },
    port: { type: "string", default: "3001" },
    compression: { type: "boolean", default: false }, // permessage-deflate, for clients that offer it
  },
});
const compress = args.compression;
const seqs = new Map<string, number>();

const event = (type: string, data: object): string => JSON.stringify({ type, data });

function publish(ws: ServerWebSocket<Conn>, msg: Message): void {
  const roomId = String(msg.roomId);
  const seq = (seqs.get(roomId) ?? 0) + 1;
  seqs.set(roomId, seq);
  const timestamp = new Date().toISOString();
  const { userId } = ws.data;
  const message = {
    id: crypto.randomUUID(),
    seq,
    roomId,
    userId,
    username: userId.slice(0, 8),
    avatar_url: null,
    content: msg.content ?? "",
    messageType: "text",
    replyTo: null,
    clientId: msg.clientId ?? null,
    timestamp,
    edited: false,
  };
  server.publish(roomId, event("new_message", { message }), compress);
  const ack = { clientId: message.clientId, messageId: message.id, seq, timestamp };
  ws.send(event("message_ack", ack), compress);
}

function handle(ws: ServerWebSocket<Conn>, msg: Message): void {
  const { userId, joined } = ws.data;
  if (msg.type === "authenticate") {
    const user = { id: userId, username: userId.slice(0, 8), avatar_url: null, role: "user" };
    ws.send(event("authenticated", { user, rooms: [] }), compress);
  } else if (msg.type === "join_room") {
    const roomId = String(msg.roomId);
    ws.subscribe(roomId);
    joined.add(roomId);
    ws.send(event("room_joined", { roomId, roomName: roomId, members: [] }), compress);
  } else if (msg.type === "create_room") {
    const room = {
      id: crypto.randomUUID(),
      name: msg.name ?? null,
      description: null,
      is_private: false,
      member_count: 1,
    };
    ws.send(event("room_created", { room }), compress);
  } else if (msg.type === "send_message" && joined.has(String(msg.roomId))) {
    publish(ws, msg);
  }
}

const server = Bun.serve({
  hostname: args.host,
  port: Number(args.port),
  fetch(req, server) {
    if (new URL(req.url).pathname !== "/ws") return new Response("not found", { status: 404 });
    const data: Conn = { userId: crypto.randomUUID(), joined: new Set() };
    return server.upgrade(req, { data }) ? undefined : new Response("upgrade failed", { status: 400 });
  },
  websocket: {
    data: {} as Conn,
    perMessageDeflate: compress,
    backpressureLimit: 0, // 0 = unlimited: never drop a message for a slow receiver
    closeOnBackpressureLimit: false,
    maxPayloadLength: 64 * 1024 * 1024,
    open(ws) {
      const hello = { message: "relay", timestamp: new Date().toISOString() };
      ws.send(event("connection_established", hello), compress);
    },
    message(ws, raw) {
      let msg: Message;
      try {
        msg = JSON.parse(String(raw));
      } catch {
        return;
      }
      if (msg !== null && typeof msg === "object") handle(ws, msg);
    },
  },
});

console.error(`relay listening on ws://${server.hostname}:${server.port}/ws`);
