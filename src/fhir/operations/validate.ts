/**
 * $validate — http://hl7.org/fhir/R4/resource-operation-validate.html
 * POST [base]/[type]/$validate and POST [base]/[type]/[id]/$validate, with the resource as the
 * body or in a Parameters `resource` parameter; `mode` create | update | delete. Returns 200 with
 * an OperationOutcome listing every issue (an "information" issue when there is none).
 */
import { fhirError, operationOutcome, type Issue } from '../errors.ts';
import { queryValue, type FhirRequest, type FhirResponse } from '../request.ts';
import type { FhirServices } from '../services.ts';
import { checkId } from '../interactions/common.ts';

export const VALIDATE_DEFINITION = {
  resourceType: 'OperationDefinition',
  url: 'http://hl7.org/fhir/OperationDefinition/Resource-validate',
  name: 'Validate',
  code: 'validate',
};

interface ValidateInput {
  resource: unknown;
  mode: string | undefined;
}

const JSON_TYPES = new Set(['application/fhir+json', 'application/json', 'application/json+fhir']);

function input(request: FhirRequest): ValidateInput {
  if (request.body !== undefined && !JSON_TYPES.has(request.contentType ?? '')) {
    throw fhirError(415, 'not-supported', 'VLM_FHIR_UNSUPPORTED_MEDIA_TYPE', '$validate takes application/fhir+json');
  }
  // A JSON `null` body is no body at all.
  const body = (request.body ?? undefined) as { resourceType?: unknown; parameter?: unknown } | undefined;
  let mode = queryValue(request, 'mode');
  if (body && typeof body === 'object' && body.resourceType === 'Parameters' && request.resourceType !== 'Parameters') {
    // Parameters.parameter entries come from the client: skip anything that is not an object.
    const parameters = (Array.isArray(body.parameter) ? (body.parameter as unknown[]) : []).filter(
      (p): p is { name?: unknown; resource?: unknown; valueCode?: unknown } => typeof p === 'object' && p !== null,
    );
    const modeCode = parameters.find((p) => p.name === 'mode')?.valueCode;
    if (modeCode !== undefined) {
      if (typeof modeCode !== 'string') throw fhirError(400, 'invalid', 'VLM_FHIR_BAD_PARAMETER', 'mode must be a code', ['mode']);
      mode = modeCode;
    }
    return { resource: parameters.find((p) => p.name === 'resource')?.resource, mode };
  }
  return { resource: body, mode };
}

export async function validate(services: FhirServices, request: FhirRequest): Promise<FhirResponse> {
  const type = request.resourceType!;
  if (request.id !== undefined) checkId(request.id);
  const { resource, mode } = input(request);
  if (mode !== undefined && !['create', 'update', 'delete'].includes(mode)) {
    throw fhirError(400, 'invalid', 'VLM_FHIR_BAD_PARAMETER', 'mode must be create, update or delete', ['mode']);
  }
  const issues: Issue[] = [];
  if (mode === 'delete') {
    if (request.id === undefined) throw fhirError(400, 'required', 'VLM_FHIR_ID_MISSING', 'mode=delete needs an instance');
  } else if (resource === undefined || resource === null) {
    throw fhirError(400, 'required', 'VLM_FHIR_BODY_MISSING', 'Give the resource to validate as the body or a resource parameter');
  } else {
    for (const issue of services.validator.validate(resource, type)) {
      issues.push({ severity: issue.severity, code: issue.code, diagnostics: issue.diagnostics, expression: [issue.expression] });
    }
    const id = (resource as { id?: unknown }).id;
    if (request.id !== undefined) {
      if (id !== request.id) issues.push({ severity: 'error', code: 'invalid', diagnostics: 'The resource id differs from the URL id', expression: ['id'] });
    } else if (mode === 'update' && id === undefined) {
      issues.push({ severity: 'error', code: 'required', diagnostics: 'mode=update needs a resource id', expression: ['id'] });
    }
  }
  if (issues.length === 0) issues.push({ severity: 'information', code: 'informational', diagnostics: 'No issues found' });
  return { status: 200, raw: true, resource: operationOutcome(issues) };
}
