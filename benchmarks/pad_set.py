"""Copy a VOC-layout set with every image padded by P pixels of the trunk's mean colour.

A test of why SPP-net ranks objects cut by the image border low (RESULTS.md,
"Size or the border?"): with the pad, a cut object's windows no longer read
conv5 cells at the map's edge; the pad is the normalisation mean, zero at
the trunk's input, as R-CNN fills a window's context beyond the image.
Boxes move by P; the JPEGs are written again at quality 95.

    python benchmarks/pad_set.py SRC DST P
"""
import sys, shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from PIL import Image
src, dst, P = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
MEAN = (124, 116, 104)  # ImageNet mean x 255: zero after the trunk's normalisation
for folder in ("JPEGImages", "Annotations", "ImageSets/Main"):
    (dst / folder).mkdir(parents=True, exist_ok=True)
for f in (src / "ImageSets/Main").iterdir():
    shutil.copy(f, dst / "ImageSets/Main" / f.name)
shutil.copy(src / "classes.txt", dst / "classes.txt")
for xml in sorted((src / "Annotations").glob("*.xml")):
    tree = ET.parse(xml); root = tree.getroot()
    name = root.find("filename").text
    image = Image.open(src / "JPEGImages" / name).convert("RGB")
    padded = Image.new("RGB", (image.width + 2 * P, image.height + 2 * P), MEAN)
    padded.paste(image, (P, P))
    padded.save(dst / "JPEGImages" / name, quality=95)
    root.find("size/width").text = str(padded.width); root.find("size/height").text = str(padded.height)
    for box in root.iter("bndbox"):
        for k in ("xmin", "ymin", "xmax", "ymax"):
            box.find(k).text = str(int(float(box.find(k).text)) + P)
    tree.write(dst / "Annotations" / xml.name)
print("padded", dst)
