// The safe Markdown subset of message text: **bold**, *italic* or _italic_, ~~strike~~,
// `inline code`, ``` code blocks ```, "> " block quotes, autolinked http(s) URLs and
// @mentions. parse() is pure (text -> a small tree); render() builds it with createElement
// and text nodes only, so no markup in a message can ever reach the page as HTML.
import { el } from './dom.js';

const FENCE = /^\s*```/;
const QUOTE = /^>\s?/;

// One alternative per inline kind, tried left to right; the earliest match in the text wins.
const INLINE = new RegExp([
  '(`+)([^`]|[^`][\\s\\S]*?[^`])\\1(?!`)', // 1, 2: code span
  '\\*\\*(?=\\S)([\\s\\S]*?\\S)\\*\\*', // 3: bold
  '~~(?=\\S)([\\s\\S]*?\\S)~~', // 4: strike
  '(?<![\\w*])\\*(?=[^\\s*])([\\s\\S]*?[^\\s*])\\*(?![\\w*])', // 5: italic with *
  '(?<!\\w)_(?=[^\\s_])([\\s\\S]*?[^\\s_])_(?!\\w)', // 6: italic with _
  '(https?://[^\\s<>"]*[^\\s<>".,:;!?\'")\\]])', // 7: URL
  '(?<![\\w@.-])@([A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?)', // 8: mention
].join('|'));

const WRAPS = { 3: 'strong', 4: 'del', 5: 'em', 6: 'em' };

/** Inline nodes of `text`: {type: 'text'|'code'|'link'|'mention', text} or {type: tag, children}. */
export function parseInline(text) {
  const out = [];
  let rest = text;
  while (rest) {
    const m = INLINE.exec(rest);
    if (!m) break;
    if (m.index > 0) out.push({ type: 'text', text: rest.slice(0, m.index) });
    if (m[2] !== undefined) out.push({ type: 'code', text: m[2] });
    else if (m[7] !== undefined) out.push({ type: 'link', text: m[7] });
    else if (m[8] !== undefined) out.push({ type: 'mention', text: m[8] });
    else {
      const group = [3, 4, 5, 6].find((g) => m[g] !== undefined);
      out.push({ type: WRAPS[group], children: parseInline(m[group]) });
    }
    rest = rest.slice(m.index + m[0].length);
  }
  if (rest) out.push({ type: 'text', text: rest });
  return out;
}

/**
 * Blocks of `text`: {type: 'code', text} for a fenced block (an unclosed fence runs to the
 * end), {type: 'quote', children: blocks} for "> " lines, {type: 'para', inline} otherwise.
 */
export function parse(text) {
  const lines = text.split('\n');
  const blocks = [];
  let para = [];
  const endPara = () => {
    if (para.length) blocks.push({ type: 'para', inline: parseInline(para.join('\n')) });
    para = [];
  };
  for (let i = 0; i < lines.length; i += 1) {
    const line = lines[i];
    if (FENCE.test(line)) {
      endPara();
      const code = [];
      for (i += 1; i < lines.length && !FENCE.test(lines[i]); i += 1) code.push(lines[i]);
      blocks.push({ type: 'code', text: code.join('\n') });
    } else if (QUOTE.test(line)) {
      endPara();
      const quoted = [];
      for (; i < lines.length && QUOTE.test(lines[i]); i += 1) quoted.push(lines[i].replace(QUOTE, ''));
      i -= 1;
      blocks.push({ type: 'quote', children: parse(quoted.join('\n')) });
    } else {
      para.push(line);
    }
  }
  endPara();
  return blocks;
}

function renderInline(nodes, isMe) {
  return nodes.map((node) => {
    switch (node.type) {
      case 'text': return document.createTextNode(node.text);
      case 'code': return el('code', { text: node.text });
      case 'link': return el('a', { href: node.text, target: '_blank', rel: 'noopener noreferrer', text: node.text });
      case 'mention': {
        const me = isMe(node.text);
        return el('span', { class: me ? 'mention me' : 'mention', text: `@${node.text}` });
      }
      default: return el(node.type, {}, ...renderInline(node.children, isMe));
    }
  });
}

function renderBlocks(blocks, isMe) {
  return blocks.map((block) => {
    if (block.type === 'code') return el('pre', {}, el('code', { text: block.text }));
    if (block.type === 'quote') return el('blockquote', { class: 'md-quote' }, ...renderBlocks(block.children, isMe));
    return el('p', {}, ...renderInline(block.inline, isMe));
  });
}

/**
 * `text` as DOM nodes. `isMe(name)` says whether a mention names the reader (or the room),
 * which is highlighted.
 */
export function render(text, isMe = () => false) {
  return renderBlocks(parse(text), isMe);
}
