// Optional client-side downscaling (`imageMaxSide`): an image larger than N pixels on its
// longer side is decoded, drawn at N on a canvas, and sent as a JPEG. It saves upload
// bandwidth and server decode time for camera photos; the model sees the picture at its
// own input size (224-336 px) either way, so embeddings change only slightly (measure
// with your model before relying on it). EXIF orientation is applied (browsers decode
// upright). Needs createImageBitmap and a canvas: browsers and Deno, not Node.

export const JPEG_QUALITY = 0.9;

/** Whether this runtime can shrink images. */
export function canShrinkImages() {
  return (
    typeof createImageBitmap === 'function' &&
    (typeof OffscreenCanvas === 'function' || typeof document !== 'undefined')
  );
}

/**
 * The image shrunk to at most `maxSide` pixels on its longer side, or null when it is
 * already small enough or this runtime cannot decode it (then the original is sent and
 * the server judges it, so a broken image still fails with the server's reason).
 * @returns {Promise<{bytes: Uint8Array, mimeType: string} | null>}
 */
export async function shrinkImage(bytes, mimeType, maxSide) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(new Blob([bytes], { type: mimeType || '' }));
  } catch {
    return null;
  }
  try {
    const scale = maxSide / Math.max(bitmap.width, bitmap.height);
    if (!(scale < 1)) return null;
    const width = Math.max(1, Math.round(bitmap.width * scale));
    const height = Math.max(1, Math.round(bitmap.height * scale));
    const canvas = makeCanvas(width, height);
    const context = canvas.getContext('2d');
    context.fillStyle = '#fff'; // transparent areas become white, not black
    context.fillRect(0, 0, width, height);
    context.imageSmoothingEnabled = true;
    context.imageSmoothingQuality = 'high';
    context.drawImage(bitmap, 0, 0, width, height);
    const blob = await toJpeg(canvas);
    return { bytes: new Uint8Array(await blob.arrayBuffer()), mimeType: 'image/jpeg' };
  } finally {
    bitmap.close();
  }
}

function makeCanvas(width, height) {
  if (typeof OffscreenCanvas === 'function') return new OffscreenCanvas(width, height);
  const canvas = document.createElement('canvas');
  canvas.width = width;
  canvas.height = height;
  return canvas;
}

function toJpeg(canvas) {
  if (canvas.convertToBlob)
    return canvas.convertToBlob({ type: 'image/jpeg', quality: JPEG_QUALITY });
  return new Promise((resolve, reject) =>
    canvas.toBlob(
      (blob) => (blob ? resolve(blob) : reject(new Error('the canvas gave no JPEG'))),
      'image/jpeg',
      JPEG_QUALITY,
    ),
  );
}
