/* Pergamon mammography and tomosynthesis display (IHE MAMMO / DBT Image Display).
 *
 * Reads the study's DICOM JSON metadata from Pergamon's own DICOMweb, finds the patient's prior
 * study, hangs the For Presentation views (never For Processing), orients each image from Image
 * Laterality, View Code Sequence and Patient Orientation (or the plane orientation of enhanced
 * objects) so the chest walls face each other, and shows frames rendered by WADO-RS /rendered
 * with the image's VOI presets. Labels, technique annotations, implant / partial view indications
 * and Mammography CAD SR marks are drawn over the images; marks live in image pixel coordinates
 * inside the same flipped box as the image, so they follow its orientation.
 * Only relative URLs on the page's own origin are used.
 */
'use strict';

const MammoViewer = (() => {
  const BASE = document.querySelector('meta[name="dicomweb"]').content;
  const params = new URLSearchParams(location.search);

  const SOP = {
    MG: '1.2.840.10008.5.1.4.1.1.1.2',
    MG_PROCESSING: '1.2.840.10008.5.1.4.1.1.1.2.1',
    DX: '1.2.840.10008.5.1.4.1.1.1.1',
    DX_PROCESSING: '1.2.840.10008.5.1.4.1.1.1.1.1',
    TOMO: '1.2.840.10008.5.1.4.1.1.13.1.3',
    PROJECTION: '1.2.840.10008.5.1.4.1.1.13.1.4',
    PROJECTION_PROCESSING: '1.2.840.10008.5.1.4.1.1.13.1.5',
    MAMMO_CAD: '1.2.840.10008.5.1.4.1.1.88.50',
  };
  const PROCESSING = new Set([SOP.MG_PROCESSING, SOP.DX_PROCESSING, SOP.PROJECTION_PROCESSING]);
  const FLAT = new Set([SOP.MG, SOP.MG_PROCESSING, SOP.DX, SOP.DX_PROCESSING]);

  // View Code Sequence (CID 4014) and View Modifier Code Sequence (CID 4015) to ACR MQCM labels;
  // SNOMED CT codes and the older SNOMED-RT ones.
  const VIEWS = {
    '399162004': 'CC', 'R-10242': 'CC', '399368009': 'MLO', 'R-10226': 'MLO', '399260004': 'ML', 'R-10224': 'ML',
    '399352003': 'LM', 'R-10228': 'LM', '399099002': 'LMO', 'R-10230': 'LMO', '399192008': 'XCCL', 'R-1024A': 'XCCL',
    '399101009': 'XCCM', 'R-1024B': 'XCCM', '399196006': 'FB', 'R-10244': 'FB', '399188001': 'SIO', 'R-102D0': 'SIO',
    '441555000': 'ISO', '127457009': 'SPECIMEN',
  };
  const MODIFIERS = {
    '399209000': 'ID', '399163009': 'MAG', 'R-102D6': 'MAG', '399055006': 'SPOT', 'R-102D7': 'SPOT',
    '399161006': 'CV', '399011000': 'AT', '399197002': 'RL', '399226006': 'RM', '399110001': 'TAN',
    '442581004': 'NP', '399225005': 'RI', '399124002': 'RS',
  };
  const MATERIALS = { TUNGSTEN: 'W', MOLYBDENUM: 'Mo', RHODIUM: 'Rh', SILVER: 'Ag', ALUMINUM: 'Al', COPPER: 'Cu' };

  const state = {
    hanging: params.get('hanging') === 'tomo' ? 'tomo' : 'mammo',
    size: ['same', 'true', 'fit'].includes(params.get('size')) ? params.get('size') : 'same',
    pitch: Number(params.get('pitch')) > 0 ? Number(params.get('pitch')) : 25.4 / 96,
    preset: Number(params.get('preset')) > 0 ? Number(params.get('preset')) - 1 : 0,
    fps: Number(params.get('fps')) > 0 ? Number(params.get('fps')) : 4,
    images: [],
    marks: [],
    tiles: [],
    frameCache: new Map(),
  };

  // --- DICOM JSON -------------------------------------------------------------------------------
  const val = (ds, tag) => (ds && ds[tag] && ds[tag].Value ? ds[tag].Value[0] : undefined);
  const vals = (ds, tag) => (ds && ds[tag] && ds[tag].Value ? ds[tag].Value : []);
  const text = (x) => (x === undefined || x === null ? '' : typeof x === 'object' ? x.Alphabetic || '' : String(x));
  const code = (item) => ({ value: text(val(item, '00080100')), scheme: text(val(item, '00080102')),
    meaning: text(val(item, '00080104')) });

  function group(ds, frame, sequence) {
    /* An item of a functional group macro: the frame's own (Per-frame) or the Shared one. */
    const perFrame = vals(ds, '52009230')[frame - 1];
    const own = perFrame && vals(perFrame, sequence)[0];
    if (own) return own;
    const shared = vals(ds, '52009229')[0];
    return shared && vals(shared, sequence)[0];
  }

  async function getJSON(url) {
    const response = await fetch(url, { headers: { Accept: 'application/dicom+json' } });
    if (response.status === 204) return [];
    if (!response.ok) throw new Error(`${url}: ${response.status} ${await response.text()}`);
    return response.json();
  }

  // --- geometry and orientation ----------------------------------------------------------------
  const dot = (a, b) => a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
  const cross = (a, b) => [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];

  function letters(v) {
    /* Patient Orientation letters of a direction cosine vector (PS3.3 C.7.6.1.1.1), strongest first. */
    const names = [['L', 'R'], ['P', 'A'], ['H', 'F']];
    return [0, 1, 2].filter((i) => Math.abs(v[i]) > 0.25)
      .sort((a, b) => Math.abs(v[b]) - Math.abs(v[a]))
      .map((i) => (v[i] > 0 ? names[i][0] : names[i][1])).join('');
  }

  function planeOrientation(ds) {
    const plane = group(ds, 1, '00209116');
    const iop = vals(plane, '00200037').map(Number);
    return iop.length === 6 ? iop : null;
  }

  function orientationOf(ds) {
    const po = vals(ds, '00200020').map(String);
    if (po.length === 2) return po;
    const iop = planeOrientation(ds);
    return iop ? [letters(iop.slice(0, 3)), letters(iop.slice(3))] : null;
  }

  function flipsFor(laterality, orientation) {
    /* Flips that put the chest wall toward the centre: a right breast shows with the chest wall on its
       right (rows run toward posterior, P), a left breast mirrored (A); top is superior (column toward F)
       or, for CC-type views, lateral (column toward the medial side: L for a right breast, R for a left). */
    if (!orientation || !['R', 'L'].includes(laterality)) return { h: false, v: false, known: false };
    const [row, column] = orientation;
    const rowAP = (row.match(/[AP]/) || [''])[0];
    const h = rowAP !== '' && rowAP !== (laterality === 'R' ? 'P' : 'A');
    const columnHF = (column.match(/[HF]/) || [''])[0];
    let v = false;
    if (columnHF) v = columnHF === 'H';
    else {
      const columnLR = (column.match(/[LR]/) || [''])[0];
      v = columnLR !== '' && columnLR === laterality;
    }
    return { h, v, known: true };
  }

  function spacingOf(ds) {
    /* [row, column] spacing in mm at the breast: Pixel Measures of enhanced objects, else Imager Pixel
       Spacing corrected by the Estimated Radiographic Magnification Factor, else Pixel Spacing. */
    const measures = group(ds, 1, '00289110');
    let spacing = vals(measures, '00280030').map(Number);
    if (spacing.length === 2) return { spacing, source: 'Pixel Measures' };
    spacing = vals(ds, '00181164').map(Number);
    if (spacing.length === 2) {
      const magnification = Number(val(ds, '00181114')) || 1;
      return { spacing: spacing.map((s) => s / magnification), source: 'Imager Pixel Spacing' };
    }
    spacing = vals(ds, '00280030').map(Number);
    if (spacing.length === 2) return { spacing, source: 'Pixel Spacing' };
    return { spacing: [0.1, 0.1], source: 'unknown (0.1 mm assumed)' };
  }

  function framePosition(image, frame) {
    /* Position of a frame along the slice normal, mm (Plane Position (Patient) . normal). */
    const iop = planeOrientation(image.ds);
    const ipp = vals(group(image.ds, frame, '00209113'), '00200032').map(Number);
    if (!iop || ipp.length !== 3) return null;
    return dot(ipp, cross(iop.slice(0, 3), iop.slice(3)));
  }

  // --- what an object is -------------------------------------------------------------------------
  function presetsOf(ds) {
    const source = group(ds, 1, '00289132') || ds;
    const centers = vals(source, '00281050').map(Number);
    const widths = vals(source, '00281051').map(Number);
    const explanations = vals(source, '00281055').map(text);
    const func = text(val(source, '00281056') || val(ds, '00281056') || 'LINEAR').toUpperCase();
    const presets = centers.map((center, i) => ({
      center, width: widths[i] ?? widths[0], func, name: explanations[i] || `Window ${i + 1}`,
    }));
    vals(ds, '00283010').forEach((lut, i) => presets.push({ lut: i, name: text(val(lut, '00283003')) || `VOI LUT ${i + 1}` }));
    return presets;
  }

  function describe(ds, role, studyDate) {
    const sopClass = text(val(ds, '00080016'));
    const viewItem = vals(ds, '00540220')[0];
    const view = viewItem ? code(viewItem) : null;
    const modifiers = viewItem ? vals(viewItem, '00540222').map(code) : [];
    const anatomy = group(ds, 1, '00209071');
    const laterality = text(val(ds, '00200062') || val(anatomy, '00209072') || val(ds, '00200060')).toUpperCase();
    const viewName = view ? VIEWS[view.value] || view.meaning : '';
    const modifierNames = modifiers.map((m) => MODIFIERS[m.value] || m.meaning);
    const imageType = vals(ds, '00080008').map(text);
    const intent = text(val(ds, '00080068')).toUpperCase();
    const orientation = orientationOf(ds);
    const partial = text(val(ds, '00281350')).toUpperCase() === 'YES';
    const { spacing, source } = spacingOf(ds);
    return {
      ds, role, studyDate, sopClass,
      study: text(val(ds, '0020000D')), series: text(val(ds, '0020000E')), sop: text(val(ds, '00080018')),
      number: Number(val(ds, '00200013')) || 0,
      laterality, view: viewName, modifiers: modifierNames,
      label: `${laterality}${viewName}${modifierNames.includes('ID') ? 'ID' : ''}`
        + modifierNames.filter((m) => m !== 'ID').map((m) => ` ${m}`).join(''),
      forPresentation: !PROCESSING.has(sopClass) && intent !== 'FOR PROCESSING',
      generated: imageType[2] === 'GENERATED_2D',
      kind: FLAT.has(sopClass) ? 'flat' : sopClass === SOP.TOMO ? 'tomo'
        : sopClass === SOP.PROJECTION || sopClass === SOP.PROJECTION_PROCESSING ? 'projection' : 'other',
      rows: Number(val(ds, '00280010')) || 0, columns: Number(val(ds, '00280011')) || 0,
      frames: Number(val(ds, '00280008')) || 1,
      orientation, flips: flipsFor(laterality, orientation), spacing, spacingSource: source,
      presets: presetsOf(ds),
      implant: text(val(ds, '00281300')).toUpperCase() === 'YES',
      partial, partialWhat: partial ? vals(ds, '00281352').map((c) => code(c).meaning).join(', ') : '',
      frameOfReference: text(val(ds, '00200052')),
    };
  }

  function technique(image) {
    const ds = image.ds;
    const parts = [];
    const kv = val(ds, '00180060');
    const uas = val(ds, '00181153');
    const mas = uas !== undefined ? Number(uas) / 1000 : val(ds, '00181152');
    const line1 = [kv !== undefined ? `${Number(kv)} kV` : '', mas !== undefined ? `${Number(mas)} mAs` : ''];
    const thickness = val(ds, '001811A0');
    const force = val(ds, '001811A2');
    const line2 = [thickness !== undefined ? `${Number(thickness)} mm` : '', force !== undefined ? `${Number(force)} N` : ''];
    const anode = text(val(ds, '00181191')).toUpperCase();
    const filter = text(val(ds, '00187050')).toUpperCase();
    const angle = val(ds, '00181510');
    const line3 = [anode || filter ? `${MATERIALS[anode] || anode}/${MATERIALS[filter] || filter}` : '',
      angle !== undefined ? `${Number(angle)}°` : ''];
    for (const line of [line1, line2, line3]) {
      const joined = line.filter(Boolean).join(' · ');
      if (joined) parts.push(joined);
    }
    return parts;
  }

  // --- CAD SR -------------------------------------------------------------------------------------
  function cadMarks(sr) {
    /* SCOORD items with their SELECTED FROM image (and frame), and SCOORD3D items, anywhere in the tree. */
    const marks = [];
    const walk = (list, finding) => {
      for (const item of list) {
        const type = text(val(item, '0040A040'));
        const concept = code(vals(item, '0040A043')[0]).meaning;
        if (type === 'SCOORD') {
          const graphic = text(val(item, '00700023'));
          const data = vals(item, '00700022').map(Number);
          for (const child of vals(item, '0040A730')) {
            if (text(val(child, '0040A040')) !== 'IMAGE') continue;
            for (const ref of vals(child, '00081199')) {
              marks.push({ graphic, data, concept, finding, sop: text(val(ref, '00081155')),
                frames: vals(ref, '00081160').map(Number) });
            }
          }
        } else if (type === 'SCOORD3D') {
          marks.push({ graphic: text(val(item, '00700023')), data3d: vals(item, '00700022').map(Number), concept,
            finding, frameOfReference: text(val(item, '30060024')) });
        }
        const found = type === 'CODE' ? code(vals(item, '0040A168')[0]).meaning || concept : finding;
        walk(vals(item, '0040A730'), found);
      }
    };
    walk(vals(sr, '0040A730'), '');
    return marks;
  }

  function resolve3d(mark, images) {
    /* A SCOORD3D mark as pixel coordinates on the nearest slice of the tomosynthesis image in its frame of reference. */
    const image = images.find((i) => i.kind === 'tomo' && i.frameOfReference === mark.frameOfReference);
    const iop = image && planeOrientation(image.ds);
    if (!iop) return null;
    const row = iop.slice(0, 3), column = iop.slice(3);
    const points = [];
    for (let i = 0; i + 2 < mark.data3d.length; i += 3) points.push(mark.data3d.slice(i, i + 3));
    const normal = cross(row, column);
    let best = 1, bestDistance = Infinity;
    for (let f = 1; f <= image.frames; f += 1) {
      const ipp = vals(group(image.ds, f, '00209113'), '00200032').map(Number);
      const distance = Math.abs(dot(points[0], normal) - dot(ipp, normal));
      if (distance < bestDistance) { best = f; bestDistance = distance; }
    }
    const origin = vals(group(image.ds, best, '00209113'), '00200032').map(Number);
    const [rowSpacing, columnSpacing] = image.spacing;
    const data = [];
    for (const p of points) {
      const d = [p[0] - origin[0], p[1] - origin[1], p[2] - origin[2]];
      data.push(dot(d, row) / columnSpacing + 0.5, dot(d, column) / rowSpacing + 0.5);
    }
    return { ...mark, data, sop: image.sop, frames: [best] };
  }

  function markSvg(mark, image) {
    const d = mark.data;
    const r = Math.max(image.rows, image.columns) * 0.025;
    const style = 'fill="none" stroke="#ff00ff" stroke-width="2" vector-effect="non-scaling-stroke"';
    const title = `<title>CAD: ${escapeHtml(mark.finding || mark.concept)}</title>`;
    switch (mark.graphic) {
      case 'POINT':
        return `<g class="cad-mark" data-finding="${escapeHtml(mark.finding)}">${title}<circle cx="${d[0]}" cy="${d[1]}" r="${r}" ${style}/>`
          + `<path d="M${d[0] - 2 * r} ${d[1]}h${r}M${d[0] + r} ${d[1]}h${r}M${d[0]} ${d[1] - 2 * r}v${r}M${d[0]} ${d[1] + r}v${r}" ${style}/></g>`;
      case 'CIRCLE':
        return `<circle class="cad-mark" cx="${d[0]}" cy="${d[1]}" r="${Math.hypot(d[2] - d[0], d[3] - d[1])}" ${style}>${title}</circle>`;
      case 'ELLIPSE': {
        const cx = (d[0] + d[2]) / 2, cy = (d[1] + d[3]) / 2;
        const rx = Math.hypot(d[2] - d[0], d[3] - d[1]) / 2, ry = Math.hypot(d[6] - d[4], d[7] - d[5]) / 2;
        const angle = (Math.atan2(d[3] - d[1], d[2] - d[0]) * 180) / Math.PI;
        return `<ellipse class="cad-mark" cx="${cx}" cy="${cy}" rx="${rx}" ry="${ry}" transform="rotate(${angle} ${cx} ${cy})" ${style}>${title}</ellipse>`;
      }
      case 'MULTIPOINT': {
        let out = '';
        for (let i = 0; i + 1 < d.length; i += 2) out += `<circle cx="${d[i]}" cy="${d[i + 1]}" r="${r / 2}" ${style}/>`;
        return `<g class="cad-mark">${title}${out}</g>`;
      }
      case 'POLYLINE':
      case 'POLYGON':
        return `<polyline class="cad-mark" points="${d.join(' ')}" ${style}>${title}</polyline>`;
      default:
        return '';
    }
  }

  const escapeHtml = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

  // --- hanging ------------------------------------------------------------------------------------
  function find(role, kind, laterality, view, { generatedFirst = false } = {}) {
    /* The For Presentation image for a slot: unmodified view, FFDM before synthesized 2D (or the
       reverse beside tomosynthesis), then the lowest Instance Number. */
    const rank = (i) => (generatedFirst ? !i.generated : i.generated);
    return state.images.filter((i) => i.role === role && i.kind === kind && i.forPresentation
      && i.laterality === laterality && i.view === view && i.modifiers.length === 0)
      .sort((a, b) => (rank(a) - rank(b)) || (a.number - b.number))[0] || null;
  }

  function layoutMammo() {
    /* Rows: current, then prior; each row RCC|LCC then RMLO|LMLO, chest walls facing within each pair. */
    const rows = [];
    for (const role of ['current', 'prior']) {
      if (!state.images.some((i) => i.role === role)) continue;
      rows.push(['CC', 'MLO'].map((view) => ['R', 'L'].map((lat) => ({
        slot: `${role}-${lat}${view}`, image: find(role, 'flat', lat, view), laterality: lat, name: `${lat}${view}`,
      }))));
    }
    const hung = new Set(rows.flat(2).map((t) => t.image).filter(Boolean));
    const extra = state.images.filter((i) => i.role === 'current' && i.kind === 'flat' && i.forPresentation
      && !i.generated && !hung.has(i)).map((image) => ({ slot: `extra-${image.label}`, image, laterality: image.laterality, name: image.label }));
    return { rows, extra };
  }

  function layoutTomo() {
    /* Per view: the tomosynthesis slices R|L beside the (synthesized) 2D R|L; then projections R|L. */
    const rows = [];
    const has = (kind, view) => state.images.some((i) => i.role === 'current' && i.kind === kind && i.view === view
      && i.forPresentation);
    for (const view of ['CC', 'MLO', 'ML', 'LM', 'XCCL']) {
      if (!has('tomo', view)) continue;
      rows.push([
        ['R', 'L'].map((lat) => ({ slot: `tomo-${lat}${view}`, image: find('current', 'tomo', lat, view), laterality: lat,
          name: `${lat}${view}` })),
        ['R', 'L'].map((lat) => ({ slot: `2d-${lat}${view}`, laterality: lat, name: `${lat}${view}`,
          image: find('current', 'flat', lat, view, { generatedFirst: true }) })),
      ]);
    }
    for (const view of ['CC', 'MLO', 'ML', 'LM', 'XCCL']) {
      if (!has('projection', view)) continue;
      rows.push([['R', 'L'].map((lat) => ({ slot: `projection-${lat}${view}`, laterality: lat, name: `${lat}${view}`,
        image: find('current', 'projection', lat, view) }))]);
    }
    return { rows, extra: [] };
  }

  // --- tiles --------------------------------------------------------------------------------------
  function makeTile(spec, container) {
    const el = document.createElement('div');
    el.className = 'tile';
    el.dataset.slot = spec.slot;
    el.tabIndex = 0;
    container.appendChild(el);
    const tile = { ...spec, el, frame: 1, timer: null };
    if (!spec.image) {
      el.classList.add('empty');
      el.dataset.empty = `no ${spec.name}`;
      return tile;
    }
    const image = spec.image;
    el.dataset.sop = image.sop;
    el.dataset.laterality = image.laterality;
    el.dataset.flipH = String(image.flips.h);
    el.dataset.flipV = String(image.flips.v);
    if (image.frames > 1) {
      tile.frame = image.kind === 'tomo' ? Number(params.get('slice')) || 1 : 1;
      el.addEventListener('wheel', (event) => { event.preventDefault(); step(tile, Math.sign(event.deltaY)); },
        { passive: false });
      el.addEventListener('keydown', (event) => {
        const keys = { ArrowDown: 1, ArrowRight: 1, PageDown: 1, ArrowUp: -1, ArrowLeft: -1, PageUp: -1 };
        if (event.key in keys) { event.preventDefault(); step(tile, keys[event.key]); }
        if (event.key === 'Home') { event.preventDefault(); show(tile, 1); }
        if (event.key === 'End') { event.preventDefault(); show(tile, image.frames); }
        if (event.key === ' ') { event.preventDefault(); toggleCine(tile); }
      });
    }
    return tile;
  }

  function step(tile, delta) {
    if (!delta) return;
    const n = tile.image.frames;
    show(tile, ((tile.frame - 1 + delta + n) % n) + 1);
  }

  function toggleCine(tile) {
    if (tile.timer) {
      clearInterval(tile.timer);
      tile.timer = null;
    } else {
      tile.timer = setInterval(() => step(tile, 1), 1000 / state.fps);
    }
    tile.el.dataset.playing = String(Boolean(tile.timer));
    const button = tile.el.querySelector('.cine');
    if (button) button.textContent = tile.timer ? '■ Stop' : '▶ Play';
  }

  function currentPreset(image) {
    if (!image.presets.length) return null;
    return image.presets[Math.min(state.preset, image.presets.length - 1)];
  }

  function renderedUrl(image, frame, width, height) {
    const query = new URLSearchParams({ accept: 'image/png', viewport: `${width},${height}` });
    const preset = currentPreset(image);
    if (preset && preset.lut === undefined) {
      query.set('window', `${preset.center},${preset.width},${preset.func.toLowerCase().replace('_', '-')}`);
    }
    return `${BASE}/studies/${image.study}/series/${image.series}/instances/${image.sop}/frames/${frame}/rendered?${query}`;
  }

  function frameUrl(url) {
    /* Object URL of a rendered frame, fetched once (cine replays from memory). */
    if (!state.frameCache.has(url)) {
      state.frameCache.set(url, fetch(url).then((r) => {
        if (!r.ok) throw new Error(`${r.status} ${url}`);
        return r.blob();
      }).then((b) => URL.createObjectURL(b)));
    }
    return state.frameCache.get(url);
  }

  function place(tile, scale) {
    /* Size the oriented box (scale: CSS px per mm), align the chest wall to the pair's centre, draw overlays. */
    const { el, image } = tile;
    if (!image) return;
    const [rowSpacing, columnSpacing] = image.spacing;
    const width = image.columns * columnSpacing * scale;
    const height = image.rows * rowSpacing * scale;
    tile.display = { width, height };
    let box = el.querySelector('.frame');
    if (!box) {
      box = document.createElement('div');
      box.className = 'frame';
      box.innerHTML = '<img alt=""><svg xmlns="http://www.w3.org/2000/svg" preserveAspectRatio="none"></svg>';
      el.appendChild(box);
      box.querySelector('img').alt = image.label;
      for (const side of ['top', 'bottom']) {
        const overlay = document.createElement('div');
        overlay.className = `overlay ${side} ${image.laterality === 'L' ? 'outer-right' : 'outer-left'}`;
        el.appendChild(overlay);
      }
      if (image.frames > 1) {
        const button = document.createElement('button');
        button.className = 'cine';
        button.type = 'button';
        button.textContent = '▶ Play';
        button.style[image.laterality === 'L' ? 'left' : 'right'] = '4px';
        button.addEventListener('click', () => toggleCine(tile));
        el.appendChild(button);
      }
    }
    const tileWidth = el.clientWidth, tileHeight = el.clientHeight;
    box.style.width = `${width}px`;
    box.style.height = `${height}px`;
    // The chest wall edge touches the side of the tile that faces the other breast.
    box.style.left = image.laterality === 'L' ? '0px' : `${tileWidth - width}px`;
    box.style.top = `${(tileHeight - height) / 2}px`;
    box.style.transform = `scale(${image.flips.h ? -1 : 1}, ${image.flips.v ? -1 : 1})`;
    box.querySelector('svg').setAttribute('viewBox', `0 0 ${image.columns} ${image.rows}`);
    show(tile, tile.frame);
  }

  function show(tile, frame) {
    const { el, image, display } = tile;
    tile.frame = frame;
    el.dataset.frame = String(frame);
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(1, Math.min(16384, Math.round(display.width * ratio)));
    const height = Math.max(1, Math.min(16384, Math.round(display.height * ratio)));
    const url = renderedUrl(image, frame, width, height);
    const img = el.querySelector('.frame img');
    const token = `${url}`;
    tile.pending = token;
    el.dataset.ready = '';
    updateBody();
    frameUrl(url).then((objectUrl) => {
      if (tile.pending !== token) return;
      img.onload = () => {
        if (tile.pending !== token) return;
        el.dataset.ready = String(frame);
        updateBody();
      };
      img.src = objectUrl;
    }).catch((error) => {
      el.dataset.ready = 'error';
      setStatus(`cannot render ${image.label}: ${error.message}`);
      updateBody();
    });
    el.querySelector('.frame svg').innerHTML = state.marks
      .filter((m) => m.sop === image.sop && (!m.frames.length || m.frames.includes(frame)))
      .map((m) => markSvg(m, image)).join('');
    el.dataset.marks = String(el.querySelectorAll('.cad-mark').length);
    overlays(tile);
  }

  function overlays(tile) {
    const { el, image, frame } = tile;
    const top = [`<div class="view">${escapeHtml(image.label || tile.name)}</div>`,
      `<div>${tile.role === 'prior' ? 'Prior' : 'Current'} · ${escapeHtml(formatDate(image.studyDate))}</div>`];
    if (image.kind === 'tomo') top.push('<div>Tomosynthesis</div>');
    if (image.kind === 'projection') top.push('<div>Projection</div>');
    if (image.generated) top.push('<div>Synthesized 2D</div>');
    if (image.implant) top.push('<div class="warn indication-implant">IMPLANT PRESENT</div>');
    if (image.partial) top.push(`<div class="warn indication-partial">PARTIAL VIEW${image.partialWhat ? `: ${escapeHtml(image.partialWhat)}` : ''}</div>`);
    if (!image.flips.known) top.push('<div class="warn">orientation unknown</div>');
    if (image.frames > 1) {
      const position = image.kind === 'tomo' ? framePosition(image, frame) : null;
      const where = position === null ? '' : ` · ${position.toFixed(1)} mm`;
      top.push(`<div class="slice">${image.kind === 'tomo' ? 'Slice' : 'Frame'} ${frame}/${image.frames}${where}</div>`);
    }
    const bottom = technique(image).map((line) => `<div>${escapeHtml(line)}</div>`);
    const preset = currentPreset(image);
    if (preset) {
      bottom.push(`<div class="voi">${preset.lut === undefined
        ? `${preset.func} C ${preset.center} W ${preset.width}` : 'VOI LUT'} · ${escapeHtml(preset.name)}</div>`);
    }
    const mmPerPixel = image.spacing[1];
    const onScreen = tile.display.width / image.columns;
    bottom.push(`<div>${mmPerPixel.toFixed(3)} mm/px · ${(onScreen).toFixed(2)} screen px/px</div>`);
    el.querySelector('.overlay.top').innerHTML = top.join('');
    el.querySelector('.overlay.bottom').innerHTML = bottom.join('');
    const slice = el.querySelector('.slice');
    if (slice) el.dataset.sliceText = slice.textContent;
  }

  const formatDate = (d) => (d && d.length === 8 ? `${d.slice(0, 4)}-${d.slice(4, 6)}-${d.slice(6)}` : d || '');

  function updateBody() {
    const live = state.tiles.filter((t) => t.image);
    const ready = live.every((t) => t.el.dataset.ready && t.el.dataset.ready !== '');
    document.body.dataset.state = ready ? 'ready' : 'loading';
  }

  function setStatus(message) {
    document.getElementById('status').textContent = message;
  }

  // --- layout and sizes --------------------------------------------------------------------------
  function build() {
    for (const tile of state.tiles) if (tile.timer) clearInterval(tile.timer);
    const main = document.getElementById('hanging');
    const extraBox = document.getElementById('extra');
    main.innerHTML = '';
    extraBox.innerHTML = '';
    const layout = state.hanging === 'tomo' ? layoutTomo() : layoutMammo();
    state.tiles = [];
    state.groups = [];
    const mainTiles = [];
    for (const row of layout.rows) {
      const rowEl = document.createElement('div');
      rowEl.className = 'row';
      main.appendChild(rowEl);
      for (const pair of row) {
        const pairEl = document.createElement('div');
        pairEl.className = 'pair';
        rowEl.appendChild(pairEl);
        for (const spec of pair) {
          spec.role = spec.slot.startsWith('prior') ? 'prior' : 'current';
          mainTiles.push(makeTile(spec, pairEl));
        }
      }
    }
    const extraTiles = layout.extra.map((spec) => makeTile({ ...spec, role: 'current' }, extraBox));
    extraBox.classList.toggle('shown', extraTiles.length > 0);
    main.classList.toggle('with-extra', extraTiles.length > 0);
    state.tiles = [...mainTiles, ...extraTiles];
    state.groups = [mainTiles, extraTiles];
    document.querySelectorAll('[data-hanging]').forEach((b) => b.classList.toggle('active', b.dataset.hanging === state.hanging));
    requestAnimationFrame(resize);
  }

  function resize() {
    /* Same size: one mm-per-pixel for every image of a group, the largest that fits every tile.
       True size: 1 / pitch CSS px per mm. Fit: each image as large as its tile allows. */
    for (const tiles of state.groups) {
      const live = tiles.filter((t) => t.image);
      const fits = live.map((t) => Math.min(t.el.clientWidth / (t.image.columns * t.image.spacing[1]),
        t.el.clientHeight / (t.image.rows * t.image.spacing[0])));
      const same = Math.min(...fits);
      live.forEach((t, i) => place(t, state.size === 'true' ? 1 / state.pitch : state.size === 'fit' ? fits[i] : same));
    }
    updateBody();
  }

  function fillPresets() {
    const select = document.getElementById('preset');
    const first = state.images.find((i) => i.forPresentation && i.presets.length);
    const count = Math.max(1, ...state.images.map((i) => i.presets.length));
    select.innerHTML = '';
    for (let i = 0; i < count; i += 1) {
      const preset = first && first.presets[i];
      const option = document.createElement('option');
      option.value = String(i);
      option.textContent = preset ? `${i + 1}: ${preset.name}` : `${i + 1}`;
      select.appendChild(option);
    }
    state.preset = Math.min(state.preset, count - 1);
    select.value = String(state.preset);
  }

  function controls() {
    document.querySelectorAll('[data-hanging]').forEach((button) => button.addEventListener('click', () => {
      state.hanging = button.dataset.hanging;
      build();
    }));
    const size = document.getElementById('size');
    size.value = state.size;
    size.addEventListener('change', () => { state.size = size.value; resize(); });
    const pitch = document.getElementById('pitch');
    pitch.value = String(Number(state.pitch.toFixed(4)));
    pitch.addEventListener('change', () => {
      if (Number(pitch.value) > 0) { state.pitch = Number(pitch.value); resize(); }
    });
    const preset = document.getElementById('preset');
    preset.addEventListener('change', () => { state.preset = Number(preset.value); resize(); });
    window.addEventListener('resize', () => requestAnimationFrame(resize));
  }

  // --- loading ------------------------------------------------------------------------------------
  async function load() {
    controls();
    const study = params.get('study');
    if (!study) {
      await listStudies();
      return;
    }
    const current = await getJSON(`${BASE}/studies/${encodeURIComponent(study)}/metadata`);
    if (!current.length) throw new Error(`study ${study} not found`);
    const patientId = text(val(current[0], '00100020'));
    const currentDate = text(val(current[0], '00080020'));
    document.getElementById('patient').textContent = `${text(val(current[0], '00100010'))} · ${patientId}`;
    let priorUid = params.get('prior');
    if (!priorUid && patientId) {
      const studies = await getJSON(`${BASE}/studies?PatientID=${encodeURIComponent(patientId)}&includefield=00080020`);
      const older = studies.map((s) => ({ uid: text(val(s, '0020000D')), date: text(val(s, '00080020')) }))
        .filter((s) => s.uid !== study && s.date && (!currentDate || s.date < currentDate))
        .sort((a, b) => b.date.localeCompare(a.date));
      priorUid = older.length ? older[0].uid : null;
    }
    const prior = priorUid ? await getJSON(`${BASE}/studies/${encodeURIComponent(priorUid)}/metadata`) : [];
    const all = [...current.map((ds) => ['current', ds]), ...prior.map((ds) => ['prior', ds])];
    state.images = all.filter(([, ds]) => vals(ds, '00280010').length && vals(ds, '00540220').length)
      .map(([role, ds]) => describe(ds, role, text(val(ds, '00080020'))));
    state.marks = [];
    for (const [, ds] of all) {
      if (text(val(ds, '00080016')) === SOP.MAMMO_CAD) state.marks.push(...cadMarks(ds));
    }
    state.marks = state.marks.map((m) => (m.data3d ? resolve3d(m, state.images) : m)).filter(Boolean);
    const processing = state.images.filter((i) => !i.forPresentation).length;
    setStatus(`${state.images.length - processing} For Presentation image(s), ${processing} For Processing not hung`
      + `${prior.length ? `, prior ${formatDate(text(val(prior[0], '00080020')))}` : ', no prior'}`
      + `, ${state.marks.length} CAD mark(s)`);
    fillPresets();
    build();
  }

  async function listStudies() {
    const studies = await getJSON(`${BASE}/studies?ModalitiesInStudy=MG&includefield=00081030`);
    const main = document.getElementById('hanging');
    main.innerHTML = '<ul class="studies"></ul>';
    for (const s of studies) {
      const li = document.createElement('li');
      const a = document.createElement('a');
      a.href = `?study=${encodeURIComponent(text(val(s, '0020000D')))}`;
      a.textContent = `${text(val(s, '00100010'))} · ${text(val(s, '00100020'))} · ${formatDate(text(val(s, '00080020')))}`
        + ` · ${text(val(s, '00081030'))}`;
      a.style.color = '#9cf';
      li.appendChild(a);
      main.firstChild.appendChild(li);
    }
    document.body.dataset.state = 'ready';
  }

  load().catch((error) => {
    setStatus(`error: ${error.message}`);
    document.body.dataset.state = 'error';
  });
  return { state, flipsFor, cadMarks };
})();
