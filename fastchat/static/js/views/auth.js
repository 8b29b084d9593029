// Signing in and out: the login and registration forms, and which half of the page shows.
import { $ } from '../dom.js';

export class AuthView {
  /**
   * `login(username, password)` and `register(username, email, password)` resolve to a
   * session {user, token, refreshToken} or throw an ApiError (shown on the form); `onSignedIn(session)`.
   */
  constructor({ login, register, onSignedIn }) {
    this.onSignedIn = onSignedIn;
    $('login-form').addEventListener('submit', (event) => this.submit(event, () =>
      login($('login-username').value.trim(), $('login-password').value)));
    $('register-form').addEventListener('submit', (event) => this.submit(event, () =>
      register($('register-username').value.trim(), $('register-email').value.trim(),
        $('register-password').value)));
    $('show-register').addEventListener('click', () => this.showForm('register'));
    $('show-login').addEventListener('click', () => this.showForm('login'));
  }

  async submit(event, call) {
    event.preventDefault();
    const form = event.currentTarget;
    const error = form.querySelector('.form-error');
    const button = form.querySelector('button[type=submit]');
    error.textContent = '';
    button.disabled = true;
    try {
      const { user, token, refreshToken } = await call();
      form.reset();
      this.onSignedIn({ token, refreshToken, user });
    } catch (err) {
      error.textContent = err.message;
      if (err.field) form.querySelector(`[name=${err.field}]`)?.focus();
    } finally {
      button.disabled = false;
    }
  }

  showForm(which) {
    $('login-form').hidden = which !== 'login';
    $('register-form').hidden = which !== 'register';
    $(which === 'login' ? 'login-username' : 'register-username').focus();
  }

  showSignedIn() {
    $('auth-view').hidden = true;
    $('chat-view').hidden = false;
  }

  /** The sign-in form, with `message` (why the session ended) above its button. */
  showSignedOut(message = '') {
    $('chat-view').hidden = true;
    $('auth-view').hidden = false;
    this.showForm('login');
    $('login-form').querySelector('.form-error').textContent = message;
    document.title = 'fastchat';
  }
}
