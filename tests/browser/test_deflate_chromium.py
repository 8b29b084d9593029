"""permessage-deflate interop with a real Chromium: it always offers
``permessage-deflate; client_max_window_bits`` and compresses what it sends."""

from __future__ import annotations

import re

import httpx

from tests.support.accounts import register

SCRIPT = """
async ({token, content}) => {
  const ws = new WebSocket(location.origin.replace("http", "ws") + "/ws");
  const events = [];
  const waiters = [];
  ws.onmessage = (e) => {
    const event = JSON.parse(e.data);
    events.push(event);
    for (const w of waiters.splice(0)) w();
  };
  const next = async (type) => {
    for (;;) {
      const found = events.find((e) => e.type === type);
      if (found) { events.splice(events.indexOf(found), 1); return found.data; }
      await new Promise((resolve) => waiters.push(resolve));
    }
  };
  await new Promise((resolve) => (ws.onopen = resolve));
  ws.send(JSON.stringify({type: "authenticate", token}));
  await next("authenticated");
  ws.send(JSON.stringify({type: "join_room", roomId: "general"}));
  await next("room_joined");
  ws.send(JSON.stringify({type: "send_message", roomId: "general", content, clientId: "z1"}));
  const echoed = (await next("new_message")).message.content;
  const ack = await next("message_ack");
  ws.send(JSON.stringify({type: "get_room_history", roomId: "general", limit: 50}));
  const history = await next("room_history");
  ws.close();
  return {extensions: ws.extensions, echoed, ackSeq: ack.seq,
          historyContents: history.messages.map((m) => m.content)};
}
"""


def compressed_frames(base_url: str) -> float:
    text = httpx.get(base_url + "/metrics").text
    return float(re.search(r"^fastchat_compressed_frames_total (\S+)", text, re.M).group(1))


def test_chromium_negotiates_shared_deflate_both_ways(browser, module_server):
    token = register(module_server.base_url)["token"]
    content = "compressible " * 150  # well above the compression threshold
    before = compressed_frames(module_server.base_url)
    page = browser.new_page()
    try:
        page.goto(module_server.base_url + "/healthz")  # same origin, no client app running
        result = page.evaluate(SCRIPT, {"token": token, "content": content})
    finally:
        page.close()
    # Chromium accepted our answer to its offer...
    assert "permessage-deflate" in result["extensions"]
    assert "server_no_context_takeover" in result["extensions"]
    # ...its compressed message was inflated by the server, and it inflated ours.
    assert result["echoed"] == content
    assert result["ackSeq"] >= 1
    assert content in result["historyContents"]
    assert compressed_frames(module_server.base_url) >= before + 2  # new_message and history
