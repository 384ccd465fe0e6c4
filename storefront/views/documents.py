"""The customer's link to an invoice or credit note: `/documents/{token}` serves its PDF.

The token is the document's own random access token (sent in the order's emails); any other
value is a plain 404, the same whether the token is malformed or unknown. The PDF is private:
never cached, not indexed, no referrer sent on.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from fulfilment.finance_documents import (
    document_by_token,
    filename_of,
    render_finance_document,
    seller_name,
)
from storefront.web import db_of, settings_of


def download(request: Request) -> Response:
    """The PDF of the document whose access token is in the path (404 otherwise)."""
    token = str(request.path_params["token"])
    with db_of(request).read_session() as session:
        document = document_by_token(session, token)
    if document is None:
        raise HTTPException(404)
    pdf = render_finance_document(document, seller=seller_name(settings_of(request).mail_from))
    return Response(pdf, media_type="application/pdf", headers={
        "content-disposition": f'inline; filename="{filename_of(document)}"',
        "cache-control": "no-store",
        "x-robots-tag": "noindex, nofollow",
        "referrer-policy": "no-referrer",
    })
