// The message list: keyed rendering so that an update rebuilds only the messages that
// changed, keeps focus in an inline edit, and keeps the scroll position steady.
import { blobUrl } from './api.js';
import { el } from './dom.js';
import { dayKey, dayLabel, fileSize, sameGroup, seenByText, timeLabel } from './format.js';
import { render as renderMarkdown } from './markdown.js';

const STICK_PX = 48;
const TOUCH = matchMedia('(hover: none)');

/**
 * Renders one conversation into `container`. `ctx` supplies the view's knowledge:
 * me, token, isPending(msg), isEditing(msg), findMessage(id), canEdit(msg),
 * canDelete(msg), canReply, canReact, isMentionOfMe(name), dividerSeq ("new messages" after
 * it, or null), seenSeq (the DM peer has read up to it, or null), readers (in a room: userId ->
 * the seq they have read up to, or null), nameOf(userId), and the actions onReply, onEdit, onDelete, onAuthor, onSaveEdit(msg, text),
 * onCancelEdit(), onReact(msg, emoji, add), onPickReaction(msg, event), onOpenThread(msg).
 */
export class MessageList {
  constructor(container) {
    this.container = container;
    this.nodes = new Map();
    this.separators = new Map();
    this.receipts = new Map(); // message id -> its "Seen by …" line
    this.empty = el('p', { class: 'empty-state', text: 'No messages yet. Say hello!' });
    this.divider = el('div', { class: 'new-divider', role: 'separator' }, el('span', { text: 'New messages' }));
    // Whether the view follows the newest message: kept across content that grows later
    // (an image arriving), which makes the list taller without a scroll of the user's own.
    this.pinned = true;
    container.addEventListener('scroll', () => { this.pinned = this.nearBottom; });
    container.addEventListener('load', () => { if (this.pinned) this.scrollToBottom(); }, true);
    container.addEventListener('click', (event) => this.select(event));
    // A long-press on a touch screen opens the context menu: show the actions instead.
    container.addEventListener('contextmenu', (event) => {
      if (!TOUCH.matches || !event.target.closest('.message') || event.target.closest('a, button')) return;
      event.preventDefault();
      this.select(event);
    });
  }

  /** A tap on a message (not on its links or buttons) shows its actions; another hides them. */
  select(event) {
    if (event.target.closest('a, button, textarea, input')) return;
    const message = event.target.closest('.message');
    for (const other of this.container.querySelectorAll('.message.selected')) {
      if (other !== message) other.classList.remove('selected');
    }
    message?.classList.toggle('selected');
  }

  /** Forget every cached node (switching conversation). */
  reset() {
    this.nodes.clear();
    this.separators.clear();
    this.receipts.clear();
    this.container.replaceChildren();
    this.pinned = true;
  }

  get nearBottom() {
    const c = this.container;
    return c.scrollHeight - c.scrollTop - c.clientHeight < STICK_PX;
  }

  scrollToBottom() {
    this.container.scrollTop = this.container.scrollHeight;
  }

  /** Show `messages` (already in display order); `loaded`: an empty list means an empty room. */
  render(messages, ctx, { forceBottom = false, loaded = false } = {}) {
    const c = this.container;
    const stick = forceBottom || this.nearBottom;
    const firstBefore = c.querySelector('.message');
    const fromBottom = c.scrollHeight - c.scrollTop;

    const desired = [];
    const liveKeys = new Set();
    const liveDays = new Set();
    let prev = null;
    let focusEdit = null;
    let dividerDue = ctx.dividerSeq != null;
    let seen = null; // the newest own message the DM peer has read
    const readBy = readersByMessage(messages, ctx);
    for (const msg of messages) {
      const day = dayKey(msg.timestamp);
      if (!prev || dayKey(prev.timestamp) !== day) {
        let sep = this.separators.get(day);
        if (!sep) {
          sep = el('div', { class: 'day-separator', role: 'separator' },
            el('span', { text: dayLabel(msg.timestamp) }));
          this.separators.set(day, sep);
        }
        liveDays.add(day);
        desired.push(sep);
      }
      if (dividerDue && msg.seq > ctx.dividerSeq && msg.userId !== ctx.me.id) {
        desired.push(this.divider);
        dividerDue = false;
      }
      const key = msg.id || `c:${msg.clientId}`;
      const version = versionOf(msg, ctx);
      let node = this.nodes.get(key);
      if (!node || node.version !== version) {
        node = { element: buildMessage(msg, ctx), version };
        this.nodes.set(key, node);
        if (ctx.isEditing(msg)) focusEdit = node.element.querySelector('.edit-input');
      }
      node.element.classList.toggle('continued', sameGroup(prev, msg) && !msg.replyTo);
      node.element.classList.remove('seen');
      if (ctx.seenSeq != null && msg.userId === ctx.me.id && msg.seq <= ctx.seenSeq) seen = node.element;
      liveKeys.add(key);
      desired.push(node.element);
      const readers = readBy.get(key);
      if (readers) desired.push(this.receipt(key, seenByText(readers)));
      prev = msg;
    }
    seen?.classList.add('seen');
    if (desired.length === 0 && loaded) desired.push(this.empty);
    for (const key of this.nodes.keys()) if (!liveKeys.has(key)) this.nodes.delete(key);
    for (const day of this.separators.keys()) if (!liveDays.has(day)) this.separators.delete(day);
    for (const key of this.receipts.keys()) if (!readBy.has(key)) this.receipts.delete(key);

    let cursor = c.firstChild;
    for (const node of desired) {
      if (node === cursor) cursor = cursor.nextSibling;
      else c.insertBefore(node, cursor);
    }
    while (cursor) {
      const next = cursor.nextSibling;
      cursor.remove();
      cursor = next;
    }

    const prepended = firstBefore && c.querySelector('.message') !== firstBefore;
    if (stick) this.scrollToBottom();
    else if (prepended) c.scrollTop = c.scrollHeight - fromBottom;
    this.pinned = this.nearBottom;
    focusEdit?.focus();
  }

  /** The "Seen by …" line under message `key`, made once and kept. */
  receipt(key, text) {
    let line = this.receipts.get(key);
    if (!line) {
      line = el('div', { class: 'read-by' });
      this.receipts.set(key, line);
    }
    if (line.textContent !== text) line.textContent = text;
    return line;
  }
}

/**
 * Where room read receipts go: message id -> the names of the members whose newest read
 * message it is (not counting a member under their own message: that they read it is plain).
 */
function readersByMessage(messages, ctx) {
  const placed = new Map();
  if (!ctx.readers) return placed;
  const stored = messages.filter((m) => m.seq != null && m.id);
  for (const [userId, seq] of ctx.readers) {
    let at = null;
    for (const m of stored) {
      if (m.seq > seq) break;
      at = m;
    }
    if (!at || at.userId === userId) continue;
    if (!placed.has(at.id)) placed.set(at.id, []);
    placed.get(at.id).push(ctx.nameOf(userId));
  }
  return placed;
}

function quoteOf(msg, ctx) {
  if (!msg.replyTo) return null;
  const original = ctx.findMessage(msg.replyTo);
  if (!original) return { author: '', text: 'original message' };
  return {
    author: original.username,
    text: original.deleted ? 'message deleted' : original.content,
  };
}

function versionOf(msg, ctx) {
  const quote = quoteOf(msg, ctx);
  return [
    msg.id, msg.seq, msg.content, msg.edited, msg.deleted, msg.attachment?.url,
    ctx.isPending(msg), ctx.isEditing(msg), ctx.canEdit(msg), ctx.canDelete(msg),
    quote?.author, quote?.text, ctx.me.username, msg.replyCount,
    JSON.stringify(msg.reactions ?? []), ctx.canReact,
  ].join('\u0001');
}

function buildMessage(msg, ctx) {
  const own = msg.userId === ctx.me.id;
  const classes = ['message'];
  if (own) classes.push('own');
  if (msg.mentionsRoom || msg.mentions?.includes(ctx.me.id)) classes.push('mentions-me');
  if (ctx.isPending(msg)) classes.push('pending');
  if (msg.deleted) classes.push('deleted');
  const node = el('article', {
    class: classes.join(' '),
    dataset: { messageId: msg.id ?? '', seq: msg.seq ?? '', userId: msg.userId },
    'aria-label': `${msg.username}, ${timeLabel(msg.timestamp)}`,
  });

  const author = el('button', {
    type: 'button', class: 'author link', text: msg.username,
    on: { click: (event) => ctx.onAuthor(msg, event) },
  });
  author.addEventListener('contextmenu', (event) => {
    event.preventDefault();
    ctx.onAuthor(msg, event);
  });
  node.append(el('div', { class: 'meta' },
    author,
    el('time', { class: 'time', datetime: msg.timestamp, text: timeLabel(msg.timestamp) }),
    ctx.isPending(msg) ? el('span', { class: 'pending-label', text: 'sending…' }) : null));

  const quote = quoteOf(msg, ctx);
  if (quote) {
    node.append(el('blockquote', { class: 'reply-quote' },
      quote.author ? el('span', { class: 'quote-author', text: quote.author }) : null,
      el('span', { class: 'quote-text', text: quote.text })));
  }

  if (msg.deleted) {
    node.append(el('div', { class: 'content', text: 'message deleted' }));
    return node;
  }

  if (ctx.isEditing(msg)) {
    node.append(editBox(msg, ctx));
  } else if (msg.attachment && msg.messageType !== 'text') {
    node.append(attachmentView(msg, ctx));
  } else {
    node.append(el('div', { class: 'body' },
      el('div', { class: 'content' }, ...renderMarkdown(msg.content, ctx.isMentionOfMe)),
      msg.edited ? el('span', { class: 'edited', text: '(edited)' }) : null));
  }
  if (msg.reactions?.length) node.append(reactionChips(msg, ctx));
  if (msg.replyCount > 0) {
    node.append(el('button', {
      type: 'button', class: 'link thread-link', text: `${msg.replyCount} ${msg.replyCount === 1 ? 'reply' : 'replies'}`,
      on: { click: () => ctx.onOpenThread(msg) },
    }));
  }
  node.append(actions(msg, ctx));
  return node;
}

function reactionChips(msg, ctx) {
  return el('div', { class: 'reactions' }, ...msg.reactions.map((r) => {
    const mine = r.userIds.includes(ctx.me.id);
    return el('button', {
      type: 'button', class: mine ? 'reaction mine' : 'reaction', 'aria-pressed': String(mine),
      'aria-label': `${r.emoji} ${r.count}`, dataset: { emoji: r.emoji },
      disabled: !ctx.canReact,
      on: { click: () => ctx.onReact(msg, r.emoji, !mine) },
    }, el('span', { class: 'emoji', text: r.emoji }), el('span', { class: 'count', text: r.count }));
  }));
}

function editBox(msg, ctx) {
  const input = el('textarea', {
    class: 'edit-input', rows: 2, maxlength: 2000, 'aria-label': 'Edit message',
  });
  input.value = msg.content;
  input.setSelectionRange(input.value.length, input.value.length);
  input.addEventListener('keydown', (event) => {
    if (event.key === 'Escape') {
      event.preventDefault();
      ctx.onCancelEdit();
    } else if (event.key === 'Enter' && !event.shiftKey) {
      event.preventDefault();
      ctx.onSaveEdit(msg, input.value);
    }
  });
  return el('div', { class: 'edit' }, input,
    el('p', { class: 'small muted', text: 'Enter to save · Esc to cancel' }));
}

function attachmentView(msg, ctx) {
  const file = msg.attachment;
  if (!file.url) {
    return el('div', { class: 'file-card' },
      el('span', { class: 'file-name', text: file.name }),
      el('span', { class: 'file-size', text: fileSize(file.size) }));
  }
  if (msg.messageType === 'image') {
    const img = el('img', { class: 'thumb', alt: file.name, loading: 'lazy' });
    blobUrl(file.url, ctx.token)
      .then((url) => { img.src = url; })
      .catch(() => { img.alt = `${file.name} (could not load)`; });
    const link = el('a', { class: 'thumb-link', href: file.url, 'aria-label': `Open ${file.name}` }, img);
    link.addEventListener('click', (event) => openFile(event, file, ctx, false));
    return el('div', { class: 'attachment' }, link);
  }
  const link = el('a', { class: 'download', href: file.url, download: file.name, text: 'Download' });
  link.addEventListener('click', (event) => openFile(event, file, ctx, true));
  return el('div', { class: 'file-card' },
    el('span', { class: 'file-name', text: file.name }),
    el('span', { class: 'file-size', text: fileSize(file.size) }),
    link);
}

// The file URL needs the Bearer token, so fetch it and hand the browser a blob: URL.
function openFile(event, file, ctx, download) {
  event.preventDefault();
  blobUrl(file.url, ctx.token).then((url) => {
    const a = el('a', { href: url, target: '_blank', rel: 'noopener' });
    if (download) a.download = file.name;
    document.body.append(a);
    a.click();
    a.remove();
  }).catch(() => ctx.onError(`Could not open ${file.name}`));
}

function actions(msg, ctx) {
  const bar = el('div', { class: 'actions' });
  if (!msg.id) return bar;
  const button = (label, name, handler) => el('button', {
    type: 'button', class: `action ${name}`, text: label, 'aria-label': `${label} message from ${msg.username}`,
    on: { click: () => handler(msg) },
  });
  if (ctx.canReact) {
    bar.append(el('button', {
      type: 'button', class: 'action react', text: '☺+', 'aria-label': `Add a reaction to the message from ${msg.username}`,
      'aria-haspopup': 'menu', on: { click: (event) => ctx.onPickReaction(msg, event) },
    }));
  }
  if (ctx.canReply) bar.append(button('Reply', 'reply', ctx.onReply));
  if (ctx.canEdit(msg)) bar.append(button('Edit', 'edit', ctx.onEdit));
  if (ctx.canDelete(msg)) bar.append(button('Delete', 'delete', ctx.onDelete));
  return bar;
}
