"""Every list that grows is shown a page at a time: dashboard pages through Django's
Paginator and templates/pagination.html, API lists through ?page=&limit= with the total in
an X-Total-Count header (the body stays the plain list that API.md promises)."""

from django.core.paginator import Page, Paginator
from django.db.models import QuerySet
from django.http import HttpResponse
from ninja import Schema

from finetune_hub.bounds import Integer, PageNumber

PER_PAGE = 25


def page_links(request, page: Page, param: str = "page") -> Page:
    """Adds previous_link / next_link to a page: the current query string with only
    `param` changed, so filters and the other lists' pages on the same page stay as they are."""

    def link(number: int) -> str:
        query = request.GET.copy()
        query[param] = number
        return "?" + query.urlencode()

    page.previous_link = link(page.previous_page_number()) if page.has_previous() else None
    page.next_link = link(page.next_page_number()) if page.has_next() else None
    return page


def paginate(request, items, *, param: str = "page", per_page: int = PER_PAGE) -> Page:
    """The page of `items` (a queryset or a list) that the query parameter `param` names;
    a missing or malformed number gives the first page, one past the end the last."""
    page = Paginator(items, per_page).get_page(request.GET.get(param))
    return page_links(request, page, param)


class PageIn(Schema):
    page: PageNumber = 1  # at most MAX_PAGE: (page - 1) * limit is an int64 OFFSET
    limit: Integer(1, 500) = 100


def api_page(items, paging: PageIn, response: HttpResponse):
    """The slice of `items` for ?page=&limit=; the total goes in the X-Total-Count header."""
    total = items.count() if isinstance(items, QuerySet) else len(items)
    response["X-Total-Count"] = str(total)
    start = (paging.page - 1) * paging.limit
    return items[start : start + paging.limit]
