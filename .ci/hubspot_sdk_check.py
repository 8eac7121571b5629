"""Checks the HubSpot fake against HubSpot's official Python client (hubspot-api-client).

Pages and searches through the fake with the SDK, so that every response is parsed by the
SDK's own models, and checks the API's behaviour the source relies on: paging by `after`, archived listings, one
sort rule, the error bodies of 401 and 400, the property definitions, the other object types,
the custom object's schema, associations, owners and pipelines. Usage: hubspot_sdk_check.py BASE_URL TOKEN
"""

import json
import sys
import urllib.request

from hubspot import HubSpot
from hubspot.crm.contacts import Filter, FilterGroup, PublicObjectSearchRequest
from hubspot.crm.contacts.exceptions import ApiException

base, token = sys.argv[1], sys.argv[2]


def contacts(access_token):
    # The SDK as a user configures it, pointed at the fake instead of api.hubapi.com.
    return HubSpot(access_token=access_token, host=base).crm.contacts


basic = contacts(token).basic_api
search = contacts(token).search_api
properties = ["createdate", "email", "firstname", "hs_object_id", "lastmodifieddate", "lastname"]

# Archive five records through the fake's admin route, so that both listings have something.
mutate = urllib.request.Request(
    f"{base}/_admin/mutate",
    data=json.dumps({"object": "contacts", "archive": 5}).encode(),
    headers={"content-type": "application/json"},
)
archived_ids = json.load(urllib.request.urlopen(mutate))
assert len(archived_ids) == 5, archived_ids

seen, after, pages = [], None, 0
while True:
    page = basic.get_page(limit=100, after=after, properties=properties, archived=False)
    pages += 1
    for result in page.results:
        assert result.id and result.updated_at and result.created_at, result
        assert result.properties["hs_object_id"] == result.id, result
        assert result.archived is False, result
        seen.append(int(result.id))
    if page.paging is None or page.paging.next is None:
        break
    after = page.paging.next.after
assert seen == sorted(seen), "list pages come in id order"
assert len(seen) == len(set(seen)), "no record twice across pages"

archived = basic.get_page(limit=100, archived=True)
assert sorted(int(r.id) for r in archived.results) == sorted(archived_ids), "archived=true lists the archived"
assert all(r.archived and r.archived_at for r in archived.results)
assert not set(archived_ids) & set(seen), "a live listing leaves archived records out"

request = PublicObjectSearchRequest(
    filter_groups=[FilterGroup(filters=[Filter(property_name="hs_object_id", operator="GT", value="0")])],
    sorts=[{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
    properties=["email"],
    limit=200,
)
found = search.do_search(public_object_search_request=request)
assert found.total == len(seen), (found.total, len(seen))
ids = [int(r.id) for r in found.results]
assert ids == sorted(ids) and len(ids) == min(200, len(seen))
assert found.paging is None or found.paging.next.after == "200"

try:
    contacts("not-the-token").basic_api.get_page(limit=1)
    raise SystemExit("a wrong token must be refused")
except ApiException as error:
    assert error.status == 401, error.status
    assert json.loads(error.body)["category"] == "INVALID_AUTHENTICATION"

try:
    two = PublicObjectSearchRequest(
        sorts=[{"propertyName": "createdate"}, {"propertyName": "hs_object_id"}], limit=10
    )
    search.do_search(public_object_search_request=two)
    raise SystemExit("two sort rules must be refused")
except ApiException as error:
    assert error.status == 400, error.status

# Property definitions, parsed by the SDK's own models: standard ones (hubspotDefined) and custom
# ones of every type, enumerations with their options.
client = HubSpot(access_token=token, host=base)
definitions = client.crm.properties.core_api.get_all(object_type="contacts").results
names = {d.name for d in definitions}
assert {"email", "hs_object_id", "lastmodifieddate"} <= names, names
custom = [d for d in definitions if not d.hubspot_defined]
assert len(custom) >= 100, len(custom)
types = {d.type for d in definitions}
assert types >= {"string", "number", "date", "datetime", "enumeration", "bool", "phone_number"}, types
for definition in definitions:
    assert definition.label and definition.field_type and definition.group_name, definition
    if definition.type == "enumeration":
        assert definition.options and all(o.value for o in definition.options), definition

# Every property asked for comes back, null where the record has none.
page = basic.get_page(limit=10, properties=sorted(names)[:40], archived=False)
assert all(len(r.properties) == 40 for r in page.results), [len(r.properties) for r in page.results]

# The other object types, and the custom object its schema describes, read by its objectTypeId.
for object_type in ["tickets", "products", "line_items", "quotes", "calls", "emails", "meetings", "notes", "tasks"]:
    page = client.crm.objects.basic_api.get_page(object_type=object_type, limit=5)
    assert page.results and all(r.id and r.updated_at for r in page.results), object_type
schemas = client.crm.schemas.core_api.get_all().results
assert len(schemas) == 1, schemas
car = schemas[0]
assert car.object_type_id == "2-1234567" and car.fully_qualified_name == "p1234567_cars", car
assert car.labels.singular == "Car" and car.properties, car
cars = client.crm.objects.basic_api.get_page(object_type=car.object_type_id, limit=5, properties=["model"])
assert cars.results and all("model" in r.properties for r in cars.results), cars

# Reference data: owners (paged, archived ones apart) and pipelines with their stages.
owners = client.crm.owners.get_all()
assert owners and all(o.id and o.email and o.updated_at and o.archived is False for o in owners), owners
gone = client.crm.owners.owners_api.get_page(archived=True).results
assert gone and all(o.archived for o in gone), gone
for object_type in ["deals", "tickets"]:
    pipelines = client.crm.pipelines.pipelines_api.get_all(object_type=object_type).results
    assert pipelines and all(p.id and p.label and p.stages for p in pipelines), pipelines
    assert all(s.id and s.label and s.metadata is not None for p in pipelines for s in p.stages)

# Batch read by id, as the sweep reads records again: every asked property, an unknown id in
# the errors of a 207.
from hubspot.crm.contacts import BatchReadInputSimplePublicObjectId, SimplePublicObjectId

some = [r.id for r in basic.get_page(limit=3).results]
read = contacts(token).batch_api.read(
    batch_read_input_simple_public_object_id=BatchReadInputSimplePublicObjectId(
        properties=["email", "firstname"],
        inputs=[SimplePublicObjectId(id=i) for i in some + ["999999999"]],
    ),
    archived=False,
)
assert sorted(r.id for r in read.results) == sorted(some), read
assert all("email" in r.properties and r.updated_at for r in read.results), read
assert read.errors and read.errors[0].category == "OBJECT_NOT_FOUND", read

# v4 associations: a batch read of some contacts' companies, each link with its types; an id
# without links comes back in `errors` of a 207.
from hubspot.crm.associations.v4 import (
    BatchInputPublicFetchAssociationsBatchRequest,
    PublicFetchAssociationsBatchRequest,
)

ids = [r.id for r in basic.get_page(limit=5).results]
inputs = [PublicFetchAssociationsBatchRequest(id=i) for i in ids + ["999999999"]]
linked = client.crm.associations.v4.batch_api.get_page(
    from_object_type="contacts",
    to_object_type="companies",
    batch_input_public_fetch_associations_batch_request=BatchInputPublicFetchAssociationsBatchRequest(inputs=inputs),
)
assert linked.status == "COMPLETE" and len(linked.results) == len(ids), linked
assert all(r._from.id in ids and r.to and r.to[0].to_object_id for r in linked.results), linked
assert all(t.type_id and t.category == "HUBSPOT_DEFINED" for r in linked.results for t in r.to[0].association_types)
assert linked.errors and linked.errors[0].category == "NO_ASSOCIATIONS_FOUND", linked

print(
    f"official client: {pages} list pages, {len(seen)} contacts, {len(definitions)} property "
    f"definitions, {len(owners)} owners, search and errors parsed"
)
