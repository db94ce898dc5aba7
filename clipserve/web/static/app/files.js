// Images from file inputs and drag-and-drop, folders included (walked recursively).

const IMAGE_NAME = /\.(jpe?g|jfif|png|apng|gif|webp|bmp|avif|heic|heif|tiff?)$/i;

export function isImageFile(file) {
  return file.type.startsWith('image/') || IMAGE_NAME.test(file.name);
}

/** The name to show: the path inside a chosen or dropped folder, else the file name. */
export function displayName(file) {
  return file.relativePath || file.webkitRelativePath || file.name;
}

/** Calls `onFiles(images)` with the image files dropped on `zone` (folders walked). */
export function acceptDrops(zone, onFiles) {
  zone.addEventListener('dragover', (event) => {
    event.preventDefault();
    event.dataTransfer.dropEffect = 'copy';
    zone.classList.add('over');
  });
  zone.addEventListener('dragleave', () => zone.classList.remove('over'));
  zone.addEventListener('drop', async (event) => {
    event.preventDefault();
    zone.classList.remove('over');
    // entries must be taken during the event; reading them may take longer
    const items = [...(event.dataTransfer.items || [])];
    const entries = items.map((item) => item.webkitGetAsEntry?.()).filter(Boolean);
    const files = entries.length ? await walkAll(entries) : [...event.dataTransfer.files];
    onFiles(files.filter(isImageFile));
  });
}

/** Calls `onFiles(images)` when files are chosen with `input`; resets it afterwards. */
export function acceptChosen(input, onFiles) {
  input.addEventListener('change', () => {
    const files = [...input.files].filter(isImageFile);
    input.value = ''; // choosing the same files again fires again
    onFiles(files);
  });
}

async function walkAll(entries) {
  const files = [];
  for (const entry of entries) await walk(entry, files);
  return files;
}

async function walk(entry, files) {
  if (entry.isFile) {
    const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
    if (entry.fullPath.includes('/', 1)) file.relativePath = entry.fullPath.slice(1);
    files.push(file);
    return;
  }
  if (!entry.isDirectory) return;
  const reader = entry.createReader();
  for (;;) {
    const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
    if (!batch.length) return;
    for (const child of batch) await walk(child, files);
  }
}
