"""The product catalog: what each SKU should weigh and measure, what it is worth."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from edge.yamlconf import ConfigError

COLUMNS = (
    "sku",
    "gtin",
    "model",
    "category",
    "weight_g",
    "weight_tolerance_g",
    "length_mm",
    "width_mm",
    "height_mm",
    "value_eur",
    "data_bearing",
)
CATEGORIES = ("phone", "tablet", "laptop")


@dataclass(frozen=True)
class CatalogItem:
    sku: str
    gtin: str
    model: str
    category: str
    weight_g: float
    weight_tolerance_g: float
    length_mm: float
    width_mm: float
    height_mm: float
    value_eur: float
    data_bearing: bool


def _gtin_valid(gtin: str) -> bool:
    if len(gtin) != 14 or not gtin.isdigit():
        return False
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(gtin[:13]))
    return (10 - total % 10) % 10 == int(gtin[13])


class Catalog:
    def __init__(self, items: list[CatalogItem]) -> None:
        self.items = items
        self._by_gtin = {item.gtin: item for item in items}
        self._by_sku = {item.sku: item for item in items}

    def by_gtin(self, gtin: str | None) -> CatalogItem | None:
        return self._by_gtin.get(gtin) if gtin else None

    def by_sku(self, sku: str) -> CatalogItem | None:
        return self._by_sku.get(sku)

    def __len__(self) -> int:
        return len(self.items)

    @classmethod
    def load(cls, path: Path | str) -> Catalog:
        source = Path(path)
        problems: list[str] = []
        items: list[CatalogItem] = []
        try:
            handle = source.open(newline="", encoding="utf-8")
        except OSError as exc:
            raise ConfigError(source, [f"{source}: cannot read: {exc}"]) from exc
        with handle:
            reader = csv.DictReader(handle)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise ConfigError(source, [f"{source}:1: missing column(s) {', '.join(missing)}"])
            for row in reader:
                line = reader.line_num
                try:
                    item = CatalogItem(
                        sku=row["sku"].strip(),
                        gtin=row["gtin"].strip(),
                        model=row["model"].strip(),
                        category=row["category"].strip(),
                        weight_g=float(row["weight_g"]),
                        weight_tolerance_g=float(row["weight_tolerance_g"]),
                        length_mm=float(row["length_mm"]),
                        width_mm=float(row["width_mm"]),
                        height_mm=float(row["height_mm"]),
                        value_eur=float(row["value_eur"]),
                        data_bearing=row["data_bearing"].strip().lower() in ("1", "true", "yes"),
                    )
                except (TypeError, ValueError, AttributeError) as exc:
                    problems.append(f"{source}:{line}: {exc}")
                    continue
                if not _gtin_valid(item.gtin):
                    problems.append(f"{source}:{line}: gtin: {item.gtin!r} is not a GTIN-14 with a valid check digit")
                if item.category not in CATEGORIES:
                    problems.append(f"{source}:{line}: category: {item.category!r} is not one of {CATEGORIES}")
                if item.weight_g <= 0 or item.weight_tolerance_g < 0:
                    problems.append(f"{source}:{line}: weight_g must be > 0 and weight_tolerance_g >= 0")
                if item.sku in {i.sku for i in items} or item.gtin in {i.gtin for i in items}:
                    problems.append(f"{source}:{line}: sku or gtin appears twice")
                items.append(item)
        if problems:
            raise ConfigError(source, problems)
        if not items:
            raise ConfigError(source, [f"{source}: the catalog is empty"])
        return cls(items)
