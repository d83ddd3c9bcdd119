/**
 * The R4 narrative rules on `Narrative.div` (http://hl7.org/fhir/R4/narrative.html#xhtml):
 *
 * - **txt-1**: the div is well-formed XHTML whose root is `<div xmlns="http://www.w3.org/1999/xhtml">`
 *   and which uses only the elements and attributes listed in the invariant's XPath (base
 *   StructureDefinition of Narrative), so no scripts, forms, frames, objects, stylesheets, event
 *   attributes or active URLs.
 * - **txt-2**: the div has some non-whitespace content: a text character other than XML whitespace
 *   (space, tab, CR, LF) or an `<img>` with a `src` (the invariant's XPath, exactly).
 *
 * {@link checkNarrativeDiv} is a single forward pass over the string (no backtracking regexes, no DOM,
 * no recursion): its time is linear in the length of the div whatever the input, which matters
 * because the div is attacker-controlled and may be megabytes long.
 *
 * Decisions beyond the letter of the invariant (each is documented where it is enforced):
 *
 * - Entities: only the five XML ones (`&amp; &lt; &gt; &quot; &apos;`) and numeric character
 *   references. The spec says the XHTML "is contained in general XML so there is no support for
 *   HTML entities like &nbsp; or &copy; ... Unicode characters SHALL be used instead" (and the HL7
 *   validator reports `Invalid entity in the XHTML ('&reg;')`). No official R4 example uses any
 *   other entity.
 * - Attributes: the invariant's list plus `xmlns` (only ever the XHTML namespace: XPath does not
 *   see namespace declarations as attributes) and `xml:lang` (the spec asks for a language on the
 *   div; `xml:lang` is its XHTML 1.0 spelling). Every other prefixed name or `xmlns:*` declaration
 *   is rejected, so every element is in the XHTML namespace.
 * - Constructs where an XML parser and a browser's HTML parser disagree (a sanitizer bypass risk
 *   when a client renders the div with `innerHTML`) are rejected: CDATA sections, comments that
 *   start with `>` or `->`, and (as XML requires anyway) `--` inside comments.
 * - URLs (`href`, `src`, `cite`, `longdesc`): `javascript:` and `vbscript:` are rejected after the
 *   normalisation a browser applies (entity decoding, leading control characters and spaces,
 *   embedded tabs/newlines, case); `data:` only for images (not `image/svg+xml` in `href`, which
 *   would open a scriptable document).
 * - `style`: allowed by the spec; values with the legacy script hooks `expression(`,
 *   `javascript:`, `vbscript:`, `-moz-binding` or `behavior:` are rejected as a best effort only.
 *   Renderers still need their own sanitising / CSP.
 * - Whitespace (only) may surround the root div; anything else outside it, including an XML
 *   declaration, DOCTYPE, comment or processing instruction, is rejected.
 * - Content models (e.g. `<div>` inside `<p>`) are not checked: the spec does not define them as
 *   invariants and the official examples do not all follow them.
 */

export const XHTML_NS = 'http://www.w3.org/1999/xhtml';

/** Elements allowed by txt-1 (R4 Narrative StructureDefinition, invariant XPath). */
export const NARRATIVE_ELEMENTS: ReadonlySet<string> = new Set([
  'a', 'abbr', 'acronym', 'b', 'big', 'blockquote', 'br', 'caption', 'cite', 'code', 'col', 'colgroup', 'dd', 'dfn',
  'div', 'dl', 'dt', 'em', 'h1', 'h2', 'h3', 'h4', 'h5', 'h6', 'hr', 'i', 'img', 'li', 'ol', 'p', 'pre', 'q', 'samp',
  'small', 'span', 'strong', 'sub', 'sup', 'table', 'tbody', 'td', 'tfoot', 'th', 'thead', 'tr', 'tt', 'ul', 'var',
]);

/** Attributes allowed by txt-1 (same source), plus `xmlns` and `xml:lang` (see the module comment). */
export const NARRATIVE_ATTRIBUTES: ReadonlySet<string> = new Set([
  'abbr', 'accesskey', 'align', 'alt', 'axis', 'bgcolor', 'border', 'cellhalign', 'cellpadding', 'cellspacing',
  'cellvalign', 'char', 'charoff', 'charset', 'cite', 'class', 'colspan', 'compact', 'coords', 'dir', 'frame',
  'headers', 'height', 'href', 'hreflang', 'hspace', 'id', 'lang', 'longdesc', 'name', 'nowrap', 'rel', 'rev',
  'rowspan', 'rules', 'scope', 'shape', 'span', 'src', 'start', 'style', 'summary', 'tabindex', 'title', 'type',
  'valign', 'value', 'vspace', 'width', 'xmlns', 'xml:lang',
]);

/** Why some well-known elements are refused (the spec's own words where it has them). */
const FORBIDDEN_ELEMENTS: Readonly<Record<string, string>> = {
  script: 'scripts are not allowed',
  noscript: 'scripts are not allowed',
  style: 'stylesheets are not allowed (use style attributes)',
  link: 'external stylesheets and base/link elements are not allowed',
  base: 'base/link elements are not allowed',
  meta: 'head content is not allowed',
  title: 'head content is not allowed',
  head: 'a head is not allowed',
  body: 'a body is not allowed',
  html: 'the root must be a div, not an html document',
  form: 'forms are not allowed',
  input: 'forms are not allowed',
  button: 'forms are not allowed',
  select: 'forms are not allowed',
  option: 'forms are not allowed',
  textarea: 'forms are not allowed',
  iframe: 'iframes are not allowed',
  frame: 'frames are not allowed',
  frameset: 'frames are not allowed',
  object: 'objects are not allowed',
  embed: 'objects are not allowed',
  applet: 'objects are not allowed',
  param: 'objects are not allowed',
  svg: 'only XHTML elements are allowed',
  math: 'only XHTML elements are allowed',
};

/** Attributes whose value is a URL. */
const URL_ATTRIBUTES: ReadonlySet<string> = new Set(['href', 'src', 'cite', 'longdesc']);

const TAB = 9;
const LF = 10;
const CR = 13;
const SP = 32;
const BANG = 33;
const DQUOTE = 34;
const HASH = 35;
const AMP = 38;
const SQUOTE = 39;
const DASH = 45;
const DOT = 46;
const SLASH = 47;
const DIGIT_0 = 48;
const DIGIT_9 = 57;
const COLON = 58;
const SEMI = 59;
const LT = 60;
const EQ = 61;
const GT = 62;
const QMARK = 63;
const UPPER_A = 65;
const UPPER_Z = 90;
const RBRACKET = 93;
const UNDERSCORE = 95;
const LOWER_A = 97;
const LOWER_F = 102;
const LOWER_X = 120;
const LOWER_Z = 122;
const UPPER_F = 70;

/** Longest character / entity reference accepted (`&#x0010FFFF;` with room for leading zeros). */
const MAX_REFERENCE = 32;

export interface NarrativeProblem {
  readonly rule: 'txt-1' | 'txt-2';
  readonly message: string;
}

/**
 * Checks one `Narrative.div` value against txt-1 and txt-2. Returns no problem for a valid div,
 * otherwise at most one problem per rule: for txt-1 the first violation found (with its offset in
 * the string and how many more were found); txt-2 only when the div is well-formed.
 */
export function checkNarrativeDiv(div: string): NarrativeProblem[] {
  const scanner = new Scanner(div);
  let fatal: string | undefined;
  try {
    scanner.run();
  } catch (e) {
    if (!(e instanceof Malformed)) throw e;
    fatal = `${e.message} (at offset ${e.offset})`;
  }
  const out: NarrativeProblem[] = [];
  if (fatal !== undefined) {
    out.push({ rule: 'txt-1', message: `Invalid XHTML: ${fatal}` });
    return out;
  }
  if (scanner.firstProblem !== undefined) {
    const more = scanner.problemCount - 1;
    out.push({ rule: 'txt-1', message: scanner.firstProblem + (more > 0 ? ` (and ${more} more problem${more === 1 ? '' : 's'})` : '') });
  }
  if (!scanner.hasContent) {
    out.push({ rule: 'txt-2', message: 'The narrative SHALL have some non-whitespace content (text or an <img> with a src)' });
  }
  return out;
}

/** A well-formedness error: scanning stops. */
class Malformed {
  readonly message: string;
  readonly offset: number;
  constructor(message: string, offset: number) {
    this.message = message;
    this.offset = offset;
  }
}

function isXmlSpace(c: number): boolean {
  return c === SP || c === LF || c === TAB || c === CR;
}

function isNameStart(c: number): boolean {
  return (c >= LOWER_A && c <= LOWER_Z) || (c >= UPPER_A && c <= UPPER_Z) || c === UNDERSCORE || c === COLON || c >= 0x80;
}

function isNameChar(c: number): boolean {
  return isNameStart(c) || (c >= DIGIT_0 && c <= DIGIT_9) || c === DASH || c === DOT;
}

/** A code point allowed by XML 1.0 `Char` (checked on decoded character references). */
function isXmlChar(cp: number): boolean {
  if (cp < SP) return cp === TAB || cp === LF || cp === CR;
  if (cp < 0xd800) return true;
  if (cp < 0xe000) return false;
  if (cp <= 0xfffd) return true;
  return cp >= 0x10000 && cp <= 0x10ffff;
}

function hexValue(c: number): number {
  if (c >= DIGIT_0 && c <= DIGIT_9) return c - DIGIT_0;
  if (c >= LOWER_A && c <= LOWER_F) return c - LOWER_A + 10;
  if (c >= UPPER_A && c <= UPPER_F) return c - UPPER_A + 10;
  return -1;
}

function show(s: string): string {
  return JSON.stringify(s.length > 40 ? s.slice(0, 37) + '...' : s);
}

class Scanner {
  private readonly s: string;
  private readonly len: number;
  private pos = 0;
  /** Names of the open elements, root first. */
  private readonly stack: string[] = [];
  /** Attribute names of the current start tag once it has two or more (cleared per tag: linear in total). */
  private seen: Set<string> | undefined;
  /** End of the last reference read by {@link reference}. */
  private refEnd = 0;
  firstProblem: string | undefined;
  problemCount = 0;
  hasContent = false;

  constructor(s: string) {
    this.s = s;
    this.len = s.length;
  }

  private problem(message: string, offset: number): void {
    if (this.problemCount++ === 0) this.firstProblem = `${message} (at offset ${offset})`;
  }

  run(): void {
    const s = this.s;
    let p = this.skipSpace(0);
    if (p >= this.len) throw new Malformed('no root element: the narrative must be a <div> element', p);
    if (s.charCodeAt(p) !== LT) throw new Malformed('text before the root element: the narrative must start with <div', p);
    this.prologMarkup(p);
    this.pos = p;
    this.startTag(true);
    if (this.stack.length > 0) this.content();
    // Only whitespace may follow the root element.
    p = this.skipSpace(this.pos);
    if (p < this.len) {
      if (s.charCodeAt(p) === LT) this.prologMarkup(p);
      throw new Malformed('content after the root </div>: the narrative must be a single <div> element', p);
    }
  }

  /** Markup outside the root that is not an element: give a precise error. */
  private prologMarkup(p: number): void {
    const s = this.s;
    const next = s.charCodeAt(p + 1);
    if (next === QMARK) {
      throw new Malformed(s.startsWith('<?xml', p) ? 'an XML declaration is not allowed: the narrative must start with <div' : 'processing instructions are not allowed', p);
    }
    if (next === BANG) {
      if (s.startsWith('<!DOCTYPE', p)) throw new Malformed('a DOCTYPE declaration is not allowed (XXE protection)', p);
      throw new Malformed('comments and declarations are not allowed outside the root <div>', p);
    }
  }

  private skipSpace(p: number): number {
    const s = this.s;
    while (p < this.len && isXmlSpace(s.charCodeAt(p))) p++;
    return p;
  }

  private nameEnd(p: number): number {
    const s = this.s;
    if (p >= this.len || !isNameStart(s.charCodeAt(p))) return p;
    p++;
    while (p < this.len && isNameChar(s.charCodeAt(p))) p++;
    return p;
  }

  /** Element content up to the end tag of the root. */
  private content(): void {
    const s = this.s;
    const len = this.len;
    let p = this.pos;
    while (p < len) {
      const c = s.charCodeAt(p);
      if (c === LT) {
        this.pos = p;
        const next = s.charCodeAt(p + 1);
        if (next === SLASH) {
          this.endTag();
          if (this.stack.length === 0) return;
        } else if (next === BANG) {
          this.markupDeclaration();
        } else if (next === QMARK) {
          throw new Malformed('processing instructions are not allowed', p);
        } else {
          this.startTag(false);
        }
        p = this.pos;
      } else if (c === AMP) {
        if (!isXmlSpace(this.reference(p))) this.hasContent = true;
        p = this.refEnd;
      } else {
        p = this.text(p);
      }
    }
    throw new Malformed(`unexpected end: <${this.stack[this.stack.length - 1] ?? 'div'}> is not closed`, len);
  }

  /** A run of character data from `p` (not at '<' or '&'): returns where it stops. */
  private text(p: number): number {
    const s = this.s;
    const len = this.len;
    let visible = false;
    for (; p < len; p++) {
      const c = s.charCodeAt(p);
      if (c > RBRACKET) {
        if (c >= 0xd800) p = this.checkHighChar(p, c);
        visible = true;
      } else if (c > SP) {
        if (c === LT || c === AMP) break;
        if (c === RBRACKET && s.startsWith(']]>', p)) throw new Malformed("']]>' is not allowed in text (write ]]&gt;)", p);
        visible = true;
      } else if (c !== SP && c !== LF && c !== TAB && c !== CR) {
        throw new Malformed(`control character U+${c.toString(16).padStart(4, '0').toUpperCase()} is not allowed in XML`, p);
      }
    }
    if (visible) this.hasContent = true;
    return p;
  }

  /**
   * Checks a UTF-16 unit at or above U+D800: surrogates must pair, U+FFFE/U+FFFF are not XML
   * characters. Returns the position of its last unit.
   */
  private checkHighChar(p: number, c: number): number {
    if (c < 0xdc00) {
      const d = this.s.charCodeAt(p + 1);
      if (d >= 0xdc00 && d <= 0xdfff) return p + 1;
      throw new Malformed('unpaired UTF-16 surrogate', p);
    }
    if (c < 0xe000) throw new Malformed('unpaired UTF-16 surrogate', p);
    if (c === 0xfffe || c === 0xffff) throw new Malformed(`U+${c.toString(16).toUpperCase()} is not allowed in XML`, p);
    return p;
  }

  /** `<!` inside the root: a comment, or a refused CDATA section / declaration. */
  private markupDeclaration(): void {
    const s = this.s;
    const p = this.pos;
    if (s.startsWith('<!--', p)) {
      const body = p + 4;
      const end = s.indexOf('-->', body);
      if (end < 0) throw new Malformed('unterminated comment', p);
      // XML forbids '--' inside a comment (this also refuses HTML's '--!>' terminator)...
      if (s.indexOf('--', body) < end) throw new Malformed("'--' is not allowed inside a comment", p);
      // ...and '<!-->' / '<!--->' are whole comments to an HTML parser but not to XML.
      const c = s.charCodeAt(body);
      if (c === GT || (c === DASH && s.charCodeAt(body + 1) === GT)) throw new Malformed("a comment must not start with '>' or '->'", p);
      this.pos = end + 3;
      return;
    }
    if (s.startsWith('<![CDATA[', p)) throw new Malformed('CDATA sections are not allowed (HTML parsers read them differently: escape the text instead)', p);
    if (s.startsWith('<!DOCTYPE', p)) throw new Malformed('a DOCTYPE declaration is not allowed (XXE protection)', p);
    throw new Malformed("'<!' must start a comment", p);
  }

  /**
   * An entity or character reference at `p` (`&`). Only the five XML entities and numeric
   * references are defined (see the module comment). Bounded look-ahead keeps this O(1).
   * Returns the code point; the reference ends before {@link refEnd}.
   */
  private reference(p: number): number {
    const s = this.s;
    const limit = Math.min(this.len, p + MAX_REFERENCE);
    let q = p + 1;
    if (s.charCodeAt(q) === HASH) {
      q++;
      const hex = s.charCodeAt(q) === LOWER_X;
      if (hex) q++;
      const digitsStart = q;
      let value = 0;
      while (q < limit) {
        const d = hex ? hexValue(s.charCodeAt(q)) : s.charCodeAt(q) - DIGIT_0;
        if (d < 0 || d > (hex ? 15 : 9)) break;
        value = value * (hex ? 16 : 10) + d;
        if (value > 0x10ffff) value = 0x110000; // saturate: reported below
        q++;
      }
      if (q === digitsStart || s.charCodeAt(q) !== SEMI) throw new Malformed(`malformed character reference ${show(s.slice(p, Math.min(q + 1, this.len)))}`, p);
      if (!isXmlChar(value)) throw new Malformed(`character reference ${show(s.slice(p, q + 1))} is not an XML character`, p);
      this.refEnd = q + 1;
      return value;
    }
    const nameStart = q;
    while (q < limit && isNameChar(s.charCodeAt(q)) && s.charCodeAt(q) !== COLON) q++;
    if (q === nameStart || s.charCodeAt(q) !== SEMI) throw new Malformed("unescaped '&': write &amp;", p);
    const name = s.slice(nameStart, q);
    let codePoint: number;
    switch (name) {
      case 'amp':
        codePoint = AMP;
        break;
      case 'lt':
        codePoint = LT;
        break;
      case 'gt':
        codePoint = GT;
        break;
      case 'quot':
        codePoint = DQUOTE;
        break;
      case 'apos':
        codePoint = SQUOTE;
        break;
      default:
        throw new Malformed(
          `undefined entity &${name}; (only &amp; &lt; &gt; &quot; &apos; and numeric references such as &#160; are allowed: HTML entities are not part of XML, use the Unicode character instead)`,
          p,
        );
    }
    this.refEnd = q + 1;
    return codePoint;
  }

  private startTag(root: boolean): void {
    const s = this.s;
    const tagStart = this.pos;
    let p = tagStart + 1;
    const nameEnd = this.nameEnd(p);
    if (nameEnd === p) throw new Malformed("'<' must start a tag: write &lt; for a literal '<'", tagStart);
    const name = s.slice(p, nameEnd);
    p = nameEnd;
    if (root && name !== 'div') this.problem(`the root element must be <div>, not <${name}>`, tagStart);
    else this.checkElement(name, tagStart);

    let firstAttr: string | undefined;
    let seen: Set<string> | undefined;
    let hasXmlns = false;
    let hasSrc = false;
    let selfClosing = false;
    for (;;) {
      const wsStart = p;
      p = this.skipSpace(p);
      if (p >= this.len) throw new Malformed(`unterminated start tag <${name}>`, tagStart);
      const c = s.charCodeAt(p);
      if (c === GT) {
        p++;
        break;
      }
      if (c === SLASH) {
        if (s.charCodeAt(p + 1) !== GT) throw new Malformed(`'/' must be followed by '>' in <${name}>`, p);
        p += 2;
        selfClosing = true;
        break;
      }
      const attrStart = p;
      const attrEnd = this.nameEnd(p);
      if (attrEnd === p) throw new Malformed(`unexpected ${show(s.charAt(p))} in start tag <${name}>`, p);
      if (wsStart === p) throw new Malformed(`attributes must be separated by whitespace in <${name}>`, p);
      const attr = s.slice(attrStart, attrEnd);
      if (firstAttr === undefined) {
        firstAttr = attr;
      } else {
        if (seen === undefined) {
          seen = this.seen ??= new Set();
          seen.clear();
          seen.add(firstAttr);
        }
        if (seen.has(attr)) throw new Malformed(`duplicate attribute ${attr} in <${name}>`, attrStart);
        seen.add(attr);
      }
      if (attr === 'xmlns') hasXmlns = true;
      else if (attr === 'src') hasSrc = true;
      p = this.skipSpace(attrEnd);
      if (s.charCodeAt(p) !== EQ) throw new Malformed(`attribute ${attr} has no value: write ${attr}="..."`, attrStart);
      p = this.skipSpace(p + 1);
      const quote = s.charCodeAt(p);
      if (quote !== DQUOTE && quote !== SQUOTE) throw new Malformed(`the value of attribute ${attr} must be quoted`, p);
      const valueStart = p + 1;
      const valueEnd = s.indexOf(quote === DQUOTE ? '"' : "'", valueStart);
      if (valueEnd < 0) throw new Malformed(`unterminated value of attribute ${attr}`, p);
      const value = this.attributeValue(valueStart, valueEnd, attr === 'xmlns' || attr === 'style' || URL_ATTRIBUTES.has(attr));
      this.checkAttribute(name, attr, value, attrStart);
      p = valueEnd + 1;
    }
    this.pos = p;
    if (root && !hasXmlns) this.problem(`the root <div> must declare the XHTML namespace: <div xmlns="${XHTML_NS}">`, tagStart);
    if (hasSrc && name === 'img') this.hasContent = true;
    if (!selfClosing) this.stack.push(name);
  }

  /**
   * Checks the characters of an attribute value and, when `wanted`, returns it with references
   * decoded (otherwise '': most values are not looked at, so they are not copied).
   */
  private attributeValue(start: number, end: number, wanted: boolean): string {
    const s = this.s;
    let decoded: string[] | undefined;
    let chunk = start;
    let p = start;
    while (p < end) {
      const c = s.charCodeAt(p);
      if (c === AMP) {
        // The closing quote is neither a name character nor a digit, so a reference ends before it.
        const codePoint = this.reference(p);
        if (wanted) {
          decoded ??= [];
          decoded.push(s.slice(chunk, p), String.fromCodePoint(codePoint));
        }
        p = this.refEnd;
        chunk = p;
      } else if (c === LT) {
        throw new Malformed("'<' is not allowed in an attribute value: write &lt;", p);
      } else if (c < SP) {
        if (c !== TAB && c !== LF && c !== CR) throw new Malformed(`control character U+${c.toString(16).padStart(4, '0').toUpperCase()} is not allowed in XML`, p);
        p++;
      } else {
        if (c >= 0xd800) p = this.checkHighChar(p, c);
        p++;
      }
    }
    if (!wanted) return '';
    if (decoded === undefined) return s.slice(start, end);
    decoded.push(s.slice(chunk, end));
    return decoded.join('');
  }

  private checkElement(name: string, offset: number): void {
    if (NARRATIVE_ELEMENTS.has(name)) return;
    if (name.includes(':')) {
      this.problem(`element <${name}> is not allowed: only XHTML elements (without a prefix) may be used`, offset);
      return;
    }
    const lower = name.toLowerCase();
    const why = FORBIDDEN_ELEMENTS[lower];
    if (why !== undefined) this.problem(`element <${name}> is not allowed: ${why}`, offset);
    else if (lower !== name && NARRATIVE_ELEMENTS.has(lower)) this.problem(`element <${name}> is not allowed: XHTML element names are lower case (<${lower}>)`, offset);
    else this.problem(`element <${name}> is not allowed in a narrative (txt-1 permits only basic HTML formatting elements)`, offset);
  }

  private checkAttribute(element: string, attr: string, value: string, offset: number): void {
    if (attr === 'xmlns') {
      if (value !== XHTML_NS) this.problem(`<${element} xmlns=${show(value)}>: the namespace must be ${XHTML_NS}`, offset);
      return;
    }
    if (!NARRATIVE_ATTRIBUTES.has(attr)) {
      if (attr.startsWith('xmlns:')) this.problem(`namespace declaration ${attr} is not allowed: only XHTML content may be used`, offset);
      else if (attr.length > 2 && (attr.charCodeAt(0) | 0x20) === 0x6f && (attr.charCodeAt(1) | 0x20) === 0x6e) this.problem(`event handler attribute ${attr} on <${element}> is not allowed (no active content)`, offset);
      else this.problem(`attribute ${attr} on <${element}> is not allowed in a narrative`, offset);
      return;
    }
    if (URL_ATTRIBUTES.has(attr)) {
      const why = urlProblem(value, attr);
      if (why !== undefined) this.problem(`<${element} ${attr}=${show(value)}>: ${why}`, offset);
    } else if (attr === 'style') {
      const why = styleProblem(value);
      if (why !== undefined) this.problem(`<${element} style=${show(value)}>: ${why}`, offset);
    }
  }

  private endTag(): void {
    const s = this.s;
    const tagStart = this.pos;
    const p = tagStart + 2;
    const nameEnd = this.nameEnd(p);
    if (nameEnd === p) throw new Malformed("'</' must start an end tag", tagStart);
    const open = this.stack[this.stack.length - 1] ?? '';
    // Compared in place: no copy of the name unless it is wrong.
    if (nameEnd - p !== open.length || !s.startsWith(open, p)) {
      throw new Malformed(`end tag </${s.slice(p, nameEnd)}> does not match the open element <${open}>`, tagStart);
    }
    const close = this.skipSpace(nameEnd);
    if (s.charCodeAt(close) !== GT) throw new Malformed(`malformed end tag </${open}`, tagStart);
    this.stack.pop();
    this.pos = close + 1;
  }
}

/**
 * The scheme of a URL as a browser reads it (leading C0 controls and spaces dropped, tabs and
 * newlines removed, lower-cased), or undefined for a relative URL. Looks at most 40 characters.
 */
function urlScheme(v: string): { scheme: string; rest: number } | undefined {
  let i = 0;
  while (i < v.length && v.charCodeAt(i) <= SP) i++;
  let scheme = '';
  for (; i < v.length && scheme.length <= 40; i++) {
    const c = v.charCodeAt(i);
    if (c === TAB || c === LF || c === CR) continue;
    if (c === COLON) return scheme.length > 0 ? { scheme, rest: i + 1 } : undefined;
    const letter = (c >= LOWER_A && c <= LOWER_Z) || (c >= UPPER_A && c <= UPPER_Z);
    if (!letter && !(scheme.length > 0 && ((c >= DIGIT_0 && c <= DIGIT_9) || c === 43 || c === DASH || c === DOT))) return undefined;
    scheme += String.fromCharCode(c | (letter ? 0x20 : 0));
  }
  return undefined;
}

function urlProblem(value: string, attr: string): string | undefined {
  const url = urlScheme(value);
  if (url === undefined) return undefined;
  if (url.scheme === 'javascript' || url.scheme === 'vbscript') return `${url.scheme}: URLs are not allowed (no active content)`;
  if (url.scheme === 'data') {
    const type = value.slice(url.rest, url.rest + 40).replace(/[\t\n\r ]/g, '').toLowerCase();
    if (!type.startsWith('image/')) return 'data: URLs are only allowed for images';
    if (attr === 'href' && type.startsWith('image/svg')) return 'links to data:image/svg+xml are not allowed (SVG documents can hold scripts)';
  }
  return undefined;
}

const STYLE_HOOKS = ['expression(', 'javascript:', 'vbscript:', '-moz-binding', 'behavior:'];

function styleProblem(value: string): string | undefined {
  const lower = value.toLowerCase();
  for (const hook of STYLE_HOOKS) if (lower.includes(hook)) return `${JSON.stringify(hook)} is not allowed in a style (no active content)`;
  return undefined;
}
