"""TBMQ's page links: `pageSize`, `page`, `textSearch`, `sortProperty`, `sortOrder` in,
`{data, totalPages, totalElements, hasNext}` out.

`PageParams` is the FastAPI dependency that reads and validates the query parameters;
`paginate` filters (case-insensitive substring of the text `search` returns), sorts (by
one of the `sort_keys`, unknown properties are a 400 naming them) and cuts the page.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, TypeVar

from fastapi import Query

from pytbmq.api.errors import bad_request

T = TypeVar("T")
MAX_PAGE_SIZE = 10_000


class SortOrder(StrEnum):
    ASC = "ASC"
    DESC = "DESC"


@dataclass(frozen=True)
class PageParams:
    page_size: int
    page: int
    text_search: str | None = None
    sort_property: str | None = None
    sort_order: SortOrder = SortOrder.ASC


def page_params(
    pageSize: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="Items per page")],
    page: Annotated[int, Query(ge=0, description="Page number, from 0")],
    textSearch: Annotated[str | None, Query(description="Case-insensitive substring")] = None,
    sortProperty: Annotated[str | None, Query(description="Property to sort by")] = None,
    sortOrder: Annotated[SortOrder, Query(description="ASC or DESC")] = SortOrder.ASC,
) -> PageParams:
    """FastAPI dependency reading a page link from the query string."""
    return PageParams(pageSize, page, textSearch or None, sortProperty or None, sortOrder)


def page_data(items: Sequence[Any], total: int, params: PageParams) -> dict[str, Any]:
    pages = (total + params.page_size - 1) // params.page_size
    return {
        "data": list(items),
        "totalPages": pages,
        "totalElements": total,
        "hasNext": (params.page + 1) * params.page_size < total,
    }


def paginate(
    items: Sequence[T],
    params: PageParams,
    *,
    search: Callable[[T], str],
    sort_keys: Mapping[str, Callable[[T], Any]],
    render: Callable[[T], Any],
) -> dict[str, Any]:
    """One page of `items` rendered with `render`, in TBMQ's page-data shape."""
    selected = list(items)
    if params.text_search:
        needle = params.text_search.casefold()
        selected = [item for item in selected if needle in search(item).casefold()]
    if params.sort_property:
        key = sort_keys.get(params.sort_property)
        if key is None:
            raise bad_request(
                f"sortProperty: unknown property {params.sort_property!r}; one of "
                + ", ".join(sorted(sort_keys))
            )
        selected.sort(key=lambda item: _sortable(key(item)), reverse=params.sort_order == "DESC")
    start = params.page * params.page_size
    window = selected[start : start + params.page_size]
    return page_data([render(item) for item in window], len(selected), params)


def _sortable(value: Any) -> tuple[int, Any]:
    """None sorts first; mixed types never raise."""
    if value is None:
        return (0, "")
    if isinstance(value, bool | int | float):
        return (1, value)
    return (2, str(value))


def enum_list(values: Sequence[str] | None, field: str, enum: Any) -> set[str]:
    """Values of a list filter (repeated and/or comma-separated), checked against `enum`;
    an unknown value is a 400 naming the field and the allowed values."""
    out: set[str] = set()
    for value in values or ():
        for item in value.split(","):
            item = item.strip()
            if not item:
                continue
            try:
                out.add(str(enum(item)))
            except ValueError:
                allowed = ", ".join(str(e) for e in enum)
                raise bad_request(f"{field}: unknown value {item!r}; one of {allowed}") from None
    return out
