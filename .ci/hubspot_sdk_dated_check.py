"""Checks the HubSpot fake's dated paths against HubSpot's new official Python library
(hubspot-sdk, generated from HubSpot's 2026-03 OpenAPI spec).

Every call goes through the SDK, which sends the dated paths (`/crm/objects/2026-03/...`,
deals as `0-3`) and parses each answer with its own models: list paging by `after`, archived
listings, one record and a 404, search, batch read with a 207, the other object types and the
custom object, property definitions, schemas, associations (batch, per record, labels), owners,
pipelines and the error bodies of 401 and 400. Owners, pipelines, schemas and association models
are validated against their models: the fake owes every field the SDK requires. Records are not: their
`properties` are typed `Dict[str, str]`, and HubSpot itself sends nulls there.

Run it against a fake started with FAKE_HUBSPOT_LEGACY=retired: it ends by proving a legacy path
answers 410 and that the SDK made no legacy request. Usage: hubspot_sdk_dated_check.py BASE_URL TOKEN
"""

import json
import sys
import urllib.error
import urllib.request

from hubspot_sdk import AuthenticationError, BadRequestError, HubSpot, NotFoundError
from hubspot_sdk.types.crm import (
    BatchResponsePublicAssociationMultiWithLabel,
    MultiAssociatedObjectWithLabel,
    ObjectSchema,
    Pipeline,
    PublicOwner,
)

base, token = sys.argv[1], sys.argv[2]
UNKNOWN = "999999999"


def client(access_token):
    # The SDK retries 408/409/429/5xx twice by default: a check must see the first answer.
    return HubSpot(access_token=access_token, base_url=base, max_retries=0)


def admin(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"{base}{path}", data=data, method=method, headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request) as answer:
        text = answer.read()
    return json.loads(text) if text else None


def strict(model, value):
    """Validates what the fake sent for `value` with `model`: the SDK builds response models
    without validating them, so a required field the fake left out would pass unseen."""
    return model.model_validate(value.model_dump(by_alias=True, exclude_unset=True))


c = client(token)
contacts = c.crm.objects.contacts
properties = ["createdate", "email", "firstname", "hs_object_id", "lastmodifieddate", "lastname"]

# Archive five records through the fake's admin route, so that both listings have something.
archived_ids = admin("POST", "/_admin/mutate", {"object": "contacts", "archive": 5})
assert len(archived_ids) == 5, archived_ids

# List: page by page, ids ascending and never twice, each with `url`.
seen, pages = [], 0
page = contacts.list(limit=100, properties=properties, archived=False)
while True:
    pages += 1
    for result in page.results:
        assert result.id and result.updated_at and result.created_at, result
        assert result.properties["hs_object_id"] == result.id, result
        assert result.archived is False, result
        assert result.url and result.url.endswith(f"/record/0-1/{result.id}"), result
        seen.append(int(result.id))
    if not page.has_next_page():
        break
    page = page.get_next_page()
assert pages > 1, pages
assert seen == sorted(seen), "list pages come in id order"
assert len(seen) == len(set(seen)), "no record twice across pages"

archived = contacts.list(limit=100, archived=True)
assert sorted(int(r.id) for r in archived.results) == sorted(archived_ids), "archived=true lists the archived"
assert all(r.archived and r.archived_at for r in archived.results)
assert not set(archived_ids) & set(seen), "a live listing leaves archived records out"

# One record, and an unknown one.
one = contacts.get(str(seen[0]), properties=["email"])
assert one.id == str(seen[0]) and "email" in one.properties and one.url, one
try:
    contacts.get(UNKNOWN)
    raise SystemExit("an unknown record must be a 404")
except NotFoundError as error:
    assert error.status_code == 404, error.status_code
    assert error.body["category"] == "OBJECT_NOT_FOUND" and error.body["correlationId"], error.body

# Search: the SDK requires `after`; sorts are strings.
found = contacts.search(
    after="0",
    limit=200,
    properties=["email"],
    filter_groups=[{"filters": [{"propertyName": "hs_object_id", "operator": "GT", "value": "0"}]}],
    sorts=["hs_object_id"],
)
assert found.total == len(seen), (found.total, len(seen))
ids = [int(r.id) for r in found.results]
assert ids == sorted(ids) and len(ids) == min(200, len(seen)), ids[:5]
assert found.paging is None or found.paging.next.after == "200", found.paging

# Batch read: `archived` in the query, `propertiesWithHistory` (required by the SDK) empty; an
# unknown id named in the errors of a 207, which the SDK's model keeps as an extra field.
some = [str(i) for i in seen[:3]]
read = contacts.batch.get(
    inputs=[{"id": i} for i in some + [UNKNOWN]],
    properties=["email", "firstname"],
    properties_with_history=[],
    archived=False,
)
assert read.status == "COMPLETE", read
assert sorted(r.id for r in read.results) == sorted(some), read
assert all("email" in r.properties and r.updated_at and r.url for r in read.results), read
errors = (read.model_extra or {}).get("errors")
assert errors and errors[0]["category"] == "OBJECT_NOT_FOUND", read

# Deals, which the SDK reads under their objectTypeId `0-3`; the other types and the custom
# object its schema describes, by the generic objects resource.
deals = c.crm.objects.deals.list(limit=5)
assert deals.results and all(d.url and "/record/0-3/" in d.url for d in deals.results), deals
for object_type in ["companies", "tickets", "products", "line_items", "quotes", "calls", "emails",
                    "meetings", "notes", "tasks", "0-5"]:
    page = c.crm.objects.custom.list(object_type=object_type, limit=5)
    assert page.results and all(r.id and r.updated_at for r in page.results), object_type

schemas = c.crm.object_schemas.list().results
assert len(schemas) == 1, schemas
car = strict(ObjectSchema, schemas[0])
assert car.object_type_id == "2-1234567" and car.fully_qualified_name == "p1234567_cars", car
assert car.labels.singular == "Car" and car.properties, car
cars = c.crm.objects.custom.list(object_type=car.object_type_id, limit=5, properties=["model"])
assert cars.results and all("model" in r.properties for r in cars.results), cars

# Property definitions, parsed by the SDK's models: standard and custom ones of every type.
definitions = c.crm.properties.list("contacts").results
names = {d.name for d in definitions}
assert {"email", "hs_object_id", "lastmodifieddate"} <= names, names
assert len([d for d in definitions if not d.hubspot_defined]) >= 100
types = {d.type for d in definitions}
assert types >= {"string", "number", "date", "datetime", "enumeration", "bool", "phone_number"}, types
for definition in definitions:
    assert definition.label and definition.field_type and definition.group_name, definition
    if definition.type == "enumeration":
        assert definition.options and all(o.value for o in definition.options), definition

# Associations: the batch read (toObjectId as text), one record's links, the link types.
linked = c.crm.associations.batch.get(
    "companies", from_object_type="contacts", inputs=[{"id": i} for i in some + [UNKNOWN]]
)
strict(BatchResponsePublicAssociationMultiWithLabel, linked)
assert linked.status == "COMPLETE" and len(linked.results) == len(some), linked
for result in linked.results:
    assert result.from_.id in some and result.to, result
    for link in result.to:
        assert isinstance(link.to_object_id, str) and link.to_object_id.isdigit(), link
        assert all(t.category == "HUBSPOT_DEFINED" and t.type_id for t in link.association_types), link
missing = (linked.model_extra or {}).get("errors")
assert missing and missing[0]["category"] == "NO_ASSOCIATIONS_FOUND", linked

links = c.crm.associations.list("companies", object_type="contacts", object_id=some[0])
assert links.results, links
for link in links.results:
    strict(MultiAssociatedObjectWithLabel, link)
batch_ids = sorted(l.to_object_id for l in linked.results[0].to)
per_record = sorted(
    l.to_object_id
    for l in c.crm.associations.list("companies", object_type="contacts", object_id=linked.results[0].from_.id)
)
assert batch_ids == per_record, (batch_ids, per_record)

labels = c.crm.associations_schema.labels.list_labels("companies", from_object_type="contacts").results
assert {(l.type_id, l.label) for l in labels} == {(279, None), (1, "Primary")}, labels

# Reference data: owners (paged, archived ones apart) and pipelines with their stages.
owners = [strict(PublicOwner, o) for o in c.crm.owners.list(limit=10)]
assert len(owners) > 10, "the SDK pages the owners through"
assert all(o.type == "PERSON" and o.email and o.archived is False and o.user_id for o in owners), owners
gone = [strict(PublicOwner, o) for o in c.crm.owners.list(archived=True)]
assert gone and all(o.archived and o.user_id_including_inactive for o in gone), gone
for object_type in ["deals", "tickets"]:
    pipelines = [strict(Pipeline, p) for p in c.crm.pipelines.list(object_type).results]
    assert pipelines and all(p.id and p.label and p.stages for p in pipelines), pipelines
    assert all(s.write_permissions for p in pipelines for s in p.stages)

# Errors, in HubSpot's current body.
try:
    client("not-the-token").crm.objects.contacts.list(limit=1)
    raise SystemExit("a wrong token must be refused")
except AuthenticationError as error:
    assert error.status_code == 401, error.status_code
    assert error.body["category"] == "INVALID_AUTHENTICATION", error.body
    assert error.body["correlationId"] and "links" in error.body, error.body
try:
    contacts.search(after="0", limit=10, filter_groups=[], properties=[], sorts=["createdate", "hs_object_id"])
    raise SystemExit("two sort rules must be refused")
except BadRequestError as error:
    assert error.status_code == 400, error.status_code
    assert error.body["category"] == "VALIDATION_ERROR" and error.body["correlationId"], error.body

# Nothing above took a legacy path: one legacy call now, and it is the only one counted.
before = admin("GET", "/_admin/stats")
assert before["legacy_requests"] == 0, before
legacy = urllib.request.Request(
    f"{base}/crm/v3/objects/contacts?limit=1", headers={"authorization": f"Bearer {token}"}
)
try:
    urllib.request.urlopen(legacy)
    raise SystemExit("a retired legacy path must answer 410 (start the fake with FAKE_HUBSPOT_LEGACY=retired)")
except urllib.error.HTTPError as error:
    assert error.code == 410, error.code
    assert json.load(error)["category"] == "API_VERSION_UNSUPPORTED"
after = admin("GET", "/_admin/stats")
assert after["legacy_requests"] == 1, after

print(
    f"hubspot-sdk on 2026-03: {pages} list pages, {len(seen)} contacts, {len(definitions)} property "
    f"definitions, {len(owners)} owners, {after['dated_requests']} dated requests, "
    f"{before['legacy_requests']} legacy ones before the last (a 410)"
)
