// The side panel: search results (each jumps to its message in context) or one thread (the
// message, its replies, and a box to reply in the thread).
import { $, el } from '../dom.js';
import { timeLabel } from '../format.js';
import { MessageList } from '../messages.js';

// Where the panel covers the whole screen (style.css, small screens): a jump closes it.
const COVERS_SCREEN = matchMedia('(max-width: 760px)');

/**
 * A search snippet: plain text with each match between "<mark>" and "</mark>", as nodes
 * (the matches as <mark> elements, everything as text: the rest is the user's raw content).
 */
function snippetNodes(snippet) {
  return snippet.split(/<\/?mark>/).map((part, i) => (i % 2 ? el('mark', { text: part }) : document.createTextNode(part)));
}

export class SidePanel {
  /**
   * `ctx`: the message list's context for the thread's messages; `actions`: onSearch(query),
   * onJump(message), onThreadReply(content), onMore() (the next page of results).
   */
  constructor(store, ctx, { onSearch, onJump, onThreadReply, onMore }) {
    this.store = store;
    this.ctx = ctx;
    this.onJump = onJump;
    this.onMore = onMore;
    this.thread = new MessageList($('thread-messages'));
    $('search-form').addEventListener('submit', (event) => {
      event.preventDefault();
      const query = $('search-input').value.trim();
      if (query) onSearch(query);
    });
    $('thread-composer').addEventListener('submit', (event) => {
      event.preventDefault();
      this.replyInThread(onThreadReply);
    });
    $('thread-input').addEventListener('keydown', (event) => {
      if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.replyInThread(onThreadReply);
      }
    });
    $('close-panel').addEventListener('click', () => this.close());
  }

  replyInThread(onThreadReply) {
    const input = $('thread-input');
    const content = input.value.trim();
    if (!content) return;
    onThreadReply(content);
    input.value = '';
  }

  get isOpen() {
    return !$('side-panel').hidden;
  }

  open(title, mode) {
    $('side-panel-title').textContent = title;
    $('side-panel').hidden = false;
    document.body.classList.add('panel-open');
    $('search-results').hidden = mode !== 'search';
    $('thread-view').hidden = mode !== 'thread';
  }

  close() {
    $('side-panel').hidden = true;
    document.body.classList.remove('panel-open');
    this.store.closeThread();
    this.thread.reset();
  }

  /** A search is on its way. */
  showSearching(query) {
    this.open(`Search: ${query}`, 'search');
    $('search-results').replaceChildren(el('p', { class: 'muted small', text: 'Searching…' }));
  }

  /** search_results: the list, or a page appended to it (`more`). */
  renderResults({ results, nextBefore }, more) {
    const box = $('search-results');
    box.querySelector('.more-results')?.remove();
    if (!more) box.replaceChildren();
    if (!more && results.length === 0) box.append(el('p', { class: 'muted small', text: 'No messages found.' }));
    for (const { message, snippet } of results) {
      box.append(el('button', {
        type: 'button', class: 'search-result', dataset: { messageId: message.id },
        on: {
          click: () => {
            if (COVERS_SCREEN.matches) this.close();
            this.onJump(message);
          },
        },
      },
      el('span', { class: 'result-meta' },
        el('strong', { text: message.username ?? '' }),
        ` ${this.store.placeOf(message)} · ${timeLabel(message.timestamp)}`),
      el('span', { class: 'snippet' }, ...snippetNodes(snippet ?? message.content))));
    }
    if (nextBefore) {
      box.append(el('button', { type: 'button', class: 'secondary more-results', text: 'More results', on: { click: () => this.onMore() } }));
    }
  }

  /** The thread of the store's open thread. */
  showThread() {
    this.open('Thread', 'thread');
    this.thread.reset();
    this.renderThread({ forceBottom: true });
    $('thread-input').focus();
  }

  renderThread(options) {
    const { thread } = this.store;
    if (!thread || !this.isOpen) return;
    // Inside the thread every reply answers the same message: no quote on each of them.
    const shown = thread.sorted().map((m) => (m.id === thread.id ? m : { ...m, replyTo: null }));
    this.thread.render(shown, this.ctx, options);
  }
}
