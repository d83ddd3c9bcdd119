/**
 * The authorization server's HTML: the login page, the approval page and the error page. Minimal,
 * no script, every interpolated value escaped; served with headers that forbid framing
 * (clickjacking) and caching.
 */

export const PAGE_HEADERS = {
  'Content-Type': 'text/html; charset=utf-8',
  'Cache-Control': 'no-store',
  Pragma: 'no-cache',
  'X-Frame-Options': 'DENY',
  'Content-Security-Policy': "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
  'Referrer-Policy': 'no-referrer',
  'X-Content-Type-Options': 'nosniff',
};

/** Escape text for HTML element content and double-quoted attributes. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"'`]/g, (c) => `&#${c.charCodeAt(0)};`);
}

const STYLE = `body{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem;color:#222}
label{display:block;margin:.8rem 0 .2rem}input[type=text],input[type=password]{width:100%;padding:.4rem;box-sizing:border-box}
button{margin:1rem .5rem 0 0;padding:.5rem 1.2rem}.error{color:#a00}ul{padding-left:1.2rem}code{font-size:.9em}`;

function layout(title: string, body: string): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>${escapeHtml(title)} – Vellum</title><style>${STYLE}</style></head>
<body><h1>${escapeHtml(title)}</h1>
${body}
</body></html>
`;
}

/** The login form; posts `form_token`, `username`, `password` to `action`. */
export function loginPage(p: { action: string; formToken: string; clientName: string; error?: string }): string {
  return layout(
    'Sign in',
    `<p><strong>${escapeHtml(p.clientName)}</strong> asks to access health records on your behalf.</p>
${p.error ? `<p class="error" role="alert">${escapeHtml(p.error)}</p>` : ''}
<form method="post" action="${escapeHtml(p.action)}">
<input type="hidden" name="form_token" value="${escapeHtml(p.formToken)}">
<label for="username">User name</label><input type="text" id="username" name="username" autocomplete="username" required>
<label for="password">Password</label><input type="password" id="password" name="password" autocomplete="current-password" required>
<button type="submit">Sign in</button>
</form>`,
  );
}

/** The approval form; posts `form_token`, `decision` (approve | deny) and, for practitioners, `patient`. */
export function approvalPage(p: {
  action: string;
  formToken: string;
  clientName: string;
  user: string;
  scopes: string[];
  askPatient: boolean;
  error?: string;
}): string {
  return layout(
    'Allow access?',
    `<p>Signed in as <strong>${escapeHtml(p.user)}</strong>.</p>
<p><strong>${escapeHtml(p.clientName)}</strong> asks for:</p>
<ul>${p.scopes.map((s) => `<li><code>${escapeHtml(s)}</code></li>`).join('')}</ul>
${p.error ? `<p class="error" role="alert">${escapeHtml(p.error)}</p>` : ''}
<form method="post" action="${escapeHtml(p.action)}">
<input type="hidden" name="form_token" value="${escapeHtml(p.formToken)}">
${
  p.askPatient
    ? `<label for="patient">Patient id (for patient-level access; leave empty for none)</label><input type="text" id="patient" name="patient" pattern="[A-Za-z0-9.\\-]{1,64}">`
    : ''
}
<button type="submit" name="decision" value="approve">Allow</button>
<button type="submit" name="decision" value="deny">Deny</button>
</form>`,
  );
}

/** An error the user sees because the client cannot be told (unknown client, bad redirect_uri). */
export function errorPage(message: string): string {
  return layout('Authorization failed', `<p class="error" role="alert">${escapeHtml(message)}</p>`);
}
