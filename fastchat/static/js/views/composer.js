// The composer: the message box, Send and Attach, the reply bar, upload progress, and files
// dropped on the conversation.
import { $, el } from '../dom.js';
import { toast } from '../ui.js';

const MAX_LENGTH = 2000;
const MAX_HEIGHT_PX = 160;

export class Composer {
  /**
   * `actions`: onSubmit(content) sends a message, onTyping(roomId | null) tells whether the
   * user is typing in a room, onCancelReply(), onFiles(files) sends files.
   */
  constructor(store, { onSubmit, onTyping, onCancelReply, onFiles }) {
    this.store = store;
    this.input = $('message-input');
    this.pane = document.querySelector('.main');
    const submit = () => {
      const content = this.input.value.trim();
      if (!content || !store.view) return;
      if (content.length > MAX_LENGTH) {
        toast(`Messages are limited to ${MAX_LENGTH} characters`);
        return;
      }
      onSubmit(content);
      this.input.value = '';
      this.autosize();
    };
    $('composer').addEventListener('submit', (event) => {
      event.preventDefault();
      submit();
    });
    this.input.addEventListener('keydown', (event) => {
      if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        submit();
      } else if (event.key === 'Escape' && store.replyTo) {
        event.preventDefault();
        onCancelReply();
      }
    });
    this.input.addEventListener('input', () => {
      this.autosize();
      const roomId = store.viewRoomId;
      onTyping(roomId && this.input.value.trim() ? roomId : null);
    });
    $('cancel-reply').addEventListener('click', () => onCancelReply());

    $('attach-button').addEventListener('click', () => $('file-input').click());
    $('file-input').addEventListener('change', (event) => {
      onFiles(event.target.files);
      event.target.value = '';
    });
    const { pane } = this;
    pane.addEventListener('dragover', (event) => {
      if (!event.dataTransfer?.types.includes('Files')) return;
      event.preventDefault();
      $('drop-hint').hidden = false;
    });
    pane.addEventListener('dragleave', (event) => {
      if (!pane.contains(event.relatedTarget)) $('drop-hint').hidden = true;
    });
    pane.addEventListener('drop', (event) => {
      event.preventDefault();
      $('drop-hint').hidden = true;
      onFiles(event.dataTransfer?.files ?? []);
    });
  }

  /** Enable the composer (Send and Attach) while a conversation is on screen. */
  update() {
    const { view } = this.store;
    const ready = Boolean(view);
    this.pane.classList.toggle('no-view', !ready);
    this.input.disabled = !ready;
    $('send-button').disabled = !ready;
    $('attach-button').disabled = !ready;
  }

  focus() {
    this.input.focus();
  }

  autosize() {
    this.input.style.height = 'auto';
    this.input.style.height = `${Math.min(this.input.scrollHeight, MAX_HEIGHT_PX)}px`;
  }

  /** A refused text message comes back into an empty box, so it is not lost. */
  giveBack(fields) {
    if (this.input.value.trim() || fields.fileId) return;
    this.input.value = fields.content;
    this.autosize();
  }

  renderReply() {
    const { replyTo } = this.store;
    const bar = $('reply-bar');
    bar.hidden = !replyTo;
    bar.querySelector('.reply-label').replaceChildren(...(replyTo
      ? ['Replying to ', el('strong', { text: replyTo.username }), ': ',
        el('span', { class: 'reply-snippet', text: replyTo.content.slice(0, 120) })]
      : []));
  }

  /** Show the upload of `name` starting; returns the progress callback (0…1). */
  showUpload(name) {
    const progress = $('upload-progress');
    const status = $('upload-status');
    status.hidden = false;
    status.querySelector('.upload-name').textContent = `Uploading ${name}`;
    progress.value = 0;
    return (fraction) => { progress.value = fraction; };
  }

  hideUpload() {
    $('upload-status').hidden = true;
  }
}
